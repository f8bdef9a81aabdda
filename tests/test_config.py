"The shipped experiments: each ablation row changes exactly one concern of the recipe it shares with `main`."
import pytest
from omegaconf import OmegaConf

from anydoor.config import compose, list_experiments

ROWS = {"abl_id_global": "id", "abl_id_none": "id", "abl_collage_raw": "detail", "abl_detail_none": "detail",
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
    assert set(list_experiments()) == set(ROWS) | {"abl_full", "main"}


@pytest.mark.parametrize("name,group", ROWS.items())
def test_ablation_row_changes_one_concern(name, group):
    diff = changed("abl_full", name) - {"name"}
    assert diff, f"{name} is identical to abl_full"
    assert {k.split(".")[0] for k in diff} == {group}, sorted(diff)


def test_main_is_the_recipe_trained_longer_and_evaluated_before():
    assert changed("abl_full", "main") == {"name", "trainer.max_steps", "trainer.checkpoint_every",
                                           "trainer.sample_every", "eval.before", "eval.seeds"}
    cfg = compose(["experiment=main"])
    assert cfg.model.pretrained == "shipped" and cfg.eval.before and cfg.trainer.max_steps == 400
    # all 64 held-out identities, one sampling seed each way (the 15-minute budget); the ablation rows keep 3 seeds
    assert cfg.eval.num_identities == 64 and list(cfg.eval.seeds) == [0]
    assert list(compose(["experiment=abl_full"]).eval.seeds) == [0, 1, 2]
