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
