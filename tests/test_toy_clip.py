"The shipped toy CLIP: a transformers CLIP vision tower that plugs in as AnyDoor's ID encoder by `id=toy_clip`."
import json

import pytest
import torch
from transformers import CLIPVisionModel
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from anydoor.config import compose
from anydoor.id_extractor import IDExtractor, load_vision_encoder
from anydoor.model import AnyDoor
from anydoor.shipped import shipped_weights_dir
from anydoor.toy_clip import FOLDER, LOG_FILE, ToyClipConfig, caption_text, encode_caption, VOCAB
from anydoor.data import make_identity
from anydoor.train import train

SHIPPED = shipped_weights_dir() / FOLDER


def test_shipped_toy_clip_loads_through_the_plug_in_path():
    encoder, (mean, std) = load_vision_encoder(str(SHIPPED))
    assert isinstance(encoder, CLIPVisionModel)
    assert mean == tuple(OPENAI_CLIP_MEAN) and std == tuple(OPENAI_CLIP_STD)     # its preprocessor_config.json
    x = IDExtractor.from_encoder(str(SHIPPED), context_dim=64, reference_size=32, seed=0)
    assert x.config["encoder_config"]["model_type"] == "clip_vision_model"
    assert x(torch.rand(2, 3, 32, 32)).shape == (2, 65, 64)


def test_shipped_toy_clip_log_records_its_run():
    log = json.loads((SHIPPED / LOG_FILE).read_text())
    assert log["command"].startswith("python -m anydoor.toy_clip")
    assert log["training"]["steps"] == ToyClipConfig().steps and log["config"]["batch_size"] == ToyClipConfig().batch_size
    assert log["training"]["loss_last_50"] < log["training"]["loss_first_50"]
    assert {"toy_clip", "toy_dinov2", "pixels"} <= set(log["retrieval"])


def test_class_tokens_use_the_encoders_own_statistics():
    from anydoor.id_extractor import normalize
    from anydoor.pretrain import encode_cls, render_queries    # the one owner of both rules, for both encoders
    encoder, stats = load_vision_encoder(str(SHIPPED))
    q = render_queries([0, 1], 2, 32, 0)
    assert q["images"].shape == (8, 3, 32, 32) and q["in_scene"].tolist() == [0] * 4 + [1] * 4
    with torch.no_grad():
        tokens = encoder(pixel_values=normalize(q["images"].float() / 255, *stats)).last_hidden_state[:, 0]
    assert torch.equal(encode_cls(encoder, q["images"], stats=stats), torch.nn.functional.normalize(tokens, dim=1))
    assert not torch.equal(encode_cls(encoder, q["images"]), encode_cls(encoder, q["images"], stats=stats))  # ImageNet's


def test_captions_name_words_not_instances():
    ident = make_identity(3)
    words = caption_text(ident).split()
    assert ident.shape in words and ident.texture in words and ident.emblem not in words
    assert encode_caption(ident).shape == (len(VOCAB),) and encode_caption(ident).sum() == 4


def test_id_toy_clip_swaps_the_encoder_in_one_override(tmp_path):
    run = tmp_path / "run"
    cfg = compose(["experiment=main", "id=toy_clip", "logger=none", "eval.enabled=false", "eval.before=false",
                   "trainer.batch_size=2", "trainer.max_steps=2", "trainer.checkpoint_every=2", "trainer.sample_every=0",
                   "data.num_workers=0", f"run_dir={run}"])
    summary = train(cfg)
    assert torch.isfinite(torch.tensor(summary["loss"]))
    model = AnyDoor.from_pretrained(run / "model")
    assert isinstance(model.id_extractor.encoder, CLIPVisionModel)
    assert model.id_extractor.config.encoder_name_or_path == str(SHIPPED)
