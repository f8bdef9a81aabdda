"The shipped experiments: each ablation row changes exactly one concern of the paper's recipe (`abl_full`); `tiny` (the shipped model's recipe) changes two, and `main` is `tiny` shortened."
import pytest
from omegaconf import OmegaConf

from anydoor.config import compose, list_experiments

ROWS = {"abl_id_global": "id", "abl_id_none": "id", "abl_collage_raw": "detail", "abl_collage_4px": "detail",
        "abl_detail_none": "detail",
        "abl_sees_latent": "detail", "abl_timesteps_uniform": "timesteps", "abl_data_video": "data",
        "abl_data_images": "data"}


def flat(cfg) -> dict:
    out = {}
    def walk(d, prefix):
        for k, v in d.items():
            if isinstance(v, dict): walk(v, f"{prefix}{k}.")
            else: out[f"{prefix}{k}"] = v
    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def changed(a: str, b: str) -> set:
    x, y = flat(compose([f"experiment={a}"])), flat(compose([f"experiment={b}"]))
    return {k for k in x.keys() | y.keys() if x.get(k) != y.get(k)}


def test_every_ablation_row_is_listed():
    assert set(list_experiments()) == set(ROWS) | {"abl_full", "tiny", "main"}


def test_the_shipped_recipe_is_the_paper_recipe_with_aligned_raw_boxes():
    assert changed("abl_full", "tiny") == {"name", "detail.collage", "data.kinds", "data.kind_weights", "data.augment_reference",
                                           "trainer.max_steps", "trainer.checkpoint_every", "trainer.ema_decay"}
    cfg = compose(["experiment=tiny"])
    assert cfg.detail.collage == "raw" and list(cfg.data.kinds) == [0] and cfg.data.augment_reference is False
    assert cfg.trainer.max_steps == 12000 and cfg.trainer.ema_decay == 0.999
    assert compose(["experiment=abl_full"]).data.augment_reference is True    # the paper's rows keep the released recipe


@pytest.mark.parametrize("name,group", ROWS.items())
def test_ablation_row_changes_one_concern(name, group):
    diff = changed("abl_full", name) - {"name"}
    assert diff, f"{name} is identical to abl_full"
    assert {k.split(".")[0] for k in diff} == {group}, sorted(diff)


def test_main_is_the_recipe_trained_longer_and_evaluated_before():
    assert changed("tiny", "main") == {"name", "trainer.max_steps", "trainer.lr", "trainer.num_threads",
                                       "trainer.checkpoint_every", "trainer.sample_every", "trainer.ema_decay",
                                       "eval.before"}
    cfg = compose(["experiment=main"])
    assert cfg.model.pretrained == "shipped" and cfg.eval.before and cfg.trainer.max_steps == 1000
    assert cfg.trainer.lr == 2 * compose(["experiment=tiny"]).trainer.lr
    # all 64 held-out identities x 3 sampling seeds each way, as the ablation rows
    assert cfg.eval.num_identities == 64 and list(cfg.eval.seeds) == [0, 1, 2]
    assert list(compose(["experiment=abl_full"]).eval.seeds) == [0, 1, 2]


@pytest.mark.parametrize("override, message", [
    ("trainer.lr=inf", "`trainer.lr` must be a finite number, got inf"),
    ("trainer.lr=nan", "`trainer.lr` must be a finite number"),
    ("eval.guidance_scale=inf", "`eval.guidance_scale` must be a finite number"),
    ("trainer.grad_clip=-1", "`trainer.grad_clip` must be >= 0"),
    ("trainer.keep_checkpoints=-1", "`trainer.keep_checkpoints` must be >= 0"),
    ("model.image_size=36", "`model.image_size` must be a positive multiple of 8 for the tiny preset, got 36"),
    ("model.reference_size=70", "`model.reference_size` must be a positive multiple of the encoder's patch 8"),
    ("eval.guidance_scale=-5", "`eval.guidance_scale` must be >= 0, got -5.0"),
    ("eval.control_scale=-1", "`eval.control_scale` must be >= 0"),
    ("seed=-1", "`seed` must be in [0,"),
    ("seed=4294967296", "`seed` must be in [0,"),
    ("model.pretrained=/no/such/folder", "`model.pretrained` must be 'shipped', 'random' or a folder"),
])
def test_the_whole_config_is_checked_before_the_first_step(override, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        compose([override])


def test_config_defaults_agree_and_lvis_is_a_data_set():
    from anydoor.config import ModelConfig
    assert compose([]).model.pretrained == ModelConfig().pretrained == "shipped"
    assert compose(["data.name=lvis"]).data.name == "lvis"
    mix = compose(["data=mix"]).data.sources
    assert abs(sum(s.weight for s in mix) - 1.0) < 1e-9 and len(mix) == 4
