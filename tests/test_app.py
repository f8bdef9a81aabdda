"The demo's mask helpers without a browser: a transformers segmenter loaded from a folder, offline failures."
import time

import numpy as np
import pytest
from PIL import Image

from anydoor.app import reference_mask, segmenter_mask, strokes_mask, stroke_box


@pytest.fixture(scope="module")
def tiny_segformer(tmp_path_factory):
    "A tiny random SegFormer with its image processor, saved as a hub download would be."
    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor
    torch.manual_seed(0)
    cfg = SegformerConfig(num_channels=3, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                          num_attention_heads=[1, 2], mlp_ratios=[2, 2], decoder_hidden_size=16, num_labels=3,
                          id2label={0: "background", 1: "thing", 2: "other"}, label2id={"background": 0, "thing": 1, "other": 2})
    folder = tmp_path_factory.mktemp("segformer")
    SegformerForSemanticSegmentation(cfg).eval().save_pretrained(folder)
    SegformerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    return str(folder)


def test_segmenter_from_a_folder(tiny_segformer):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
    m = segmenter_mask(img, tiny_segformer, box=(10, 5, 60, 40))
    assert m.shape == (48, 80) and m.dtype == bool and m.any()
    # through the demo's entry point, with the box of a scribble on the reference
    strokes = np.zeros((48, 80), bool); strokes[5:40, 10] = strokes[5:40, 59] = True
    assert stroke_box(strokes) == (10, 5, 60, 40)
    m2 = reference_mask(Image.fromarray(img), "segmenter", strokes, segmenter=tiny_segformer)
    assert (m2 == m).all()


def test_missing_segmenter_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.time()
    with pytest.raises(OSError, match="cannot load the segmentation model.*--segmenter"):
        segmenter_mask(np.zeros((8, 8, 3), np.uint8), str(tmp_path / "no-such-model"))
    assert time.time() - t0 < 30


def test_bad_editor_values():
    with pytest.raises(ValueError, match="`scene` must be an image-editor value"):
        strokes_mask("not a dict", "scene")
    with pytest.raises(ValueError, match="uint8 image"):
        strokes_mask({"layers": [np.zeros((4, 4), np.float32)]}, "scene")
    with pytest.raises(ValueError, match="`source` must be one of"):
        reference_mask(Image.new("RGB", (8, 8)), "magic")
    with pytest.raises(ValueError, match="needs an uploaded mask"):
        reference_mask(Image.new("RGB", (8, 8)), "upload")
    with pytest.raises(ValueError, match="the uploaded mask is 4x4, the reference 8x8"):
        reference_mask(Image.new("RGB", (8, 8)), "upload", uploaded=Image.new("L", (4, 4), 255))
