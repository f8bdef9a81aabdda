"The identity judge (anydoor.judge): its command, its refusals, and the shipped judge's validation record."
import json, math
import numpy as np

import pytest
import torch

from anydoor.id_extractor import ModelNotAvailableError
from anydoor.judge import (IdentityJudge, JudgeConfig, JUDGE_FOLDER, JUDGE_LOG, attribute_labels, check_judge_config,
                           crop_pool, hue_rotate, judge_scores, load_judge, main, train_judge)
from anydoor.shipped import shipped_weights_dir


def test_config_errors_name_the_field():
    for kw, field in [(dict(out=""), "`out`"), (dict(steps=0), "`steps`"), (dict(lr=float("inf")), "`lr`"),
                      (dict(image_sizes="32,x"), "`image_sizes`"), (dict(image_sizes="30"), "`image_sizes`"),
                      (dict(threads=0), "`threads`"), (dict(batch_size=True), "`batch_size`")]:
        cfg = JudgeConfig(**{"out": "x", **kw})
        with pytest.raises(ValueError, match=field):
            check_judge_config(cfg)


def test_held_out_identities_never_train_the_judge():
    pool = crop_pool("heldout", image_sizes=(32,), size=8)
    with pytest.raises(ValueError, match="training identities only"):
        train_judge(pool, JudgeConfig(out="x", steps=1, batch_size=4))


def test_command_writes_a_loadable_judge(tmp_path):
    out = tmp_path / "judge"
    main(["--out", str(out), "--pool-size", "64", "--steps", "2", "--batch-size", "8", "--val-pairs", "1",
          "--image-sizes", "32", "--workers", "0"])
    log = json.loads((out / JUDGE_LOG).read_text())
    assert log["command"].startswith("python -m anydoor.judge --out")
    assert set(log["validation"]["32"]["plain"]) == {"shape", "texture", "emblem", "identity", "colour_identity"}
    judge = load_judge(out)
    assert isinstance(judge, IdentityJudge) and not judge.training
    with pytest.raises(SystemExit):
        main(["--out", str(out), "--steps", "-1"])


def test_missing_judge_fails_fast_with_the_command(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="python -m anydoor.judge --out"):
        load_judge(tmp_path / "nothing")


def test_scores_check_their_inputs():
    judge = IdentityJudge()
    crops, ids = torch.rand(3, 3, 32, 32), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="`crops` must lie in"):
        judge_scores(judge, crops * 2, ids, crops, ids)
    with pytest.raises(ValueError, match="`identities`"):
        judge_scores(judge, crops, ids[:2], crops, ids)
    out = judge_scores(judge, crops, ids, crops, ids)
    assert set(out) == {"shape", "texture", "emblem", "identity"} and all(v.shape == (3,) for v in out.values())
    assert attribute_labels([0, 1]).shape == (2, 3)


def test_shipped_judge_meets_its_bar():
    "The shipped judge's validation on held-out ground truth at S = 64: the bar it was built to, and blind to hue."
    log = json.loads((shipped_weights_dir() / JUDGE_FOLDER / JUDGE_LOG).read_text())
    v = log["validation"]["64"]
    plain, hue = v["plain"], v["hue_rotated"]
    assert plain["shape"][0] >= 0.9 and plain["texture"][0] >= 0.8 and plain["identity"][0] >= 0.8
    for k in ("shape", "texture", "emblem", "identity"):
        assert abs(hue[k][0] - plain[k][0]) <= 0.05, k
    assert hue["colour_identity"][0] < plain["colour_identity"][0] - 0.2     # the histogram is what hue fools


def test_shipped_judge_reads_fresh_ground_truth():
    "Re-measured here on held-out pairs the log never saw (another seed): close to the logged validation."
    judge = load_judge()
    from anydoor.data import TeleportToyDataset
    gallery = TeleportToyDataset("heldout", image_size=64, reference_size=64).reference_gallery()
    pool = crop_pool("heldout", image_sizes=(64,), size=128, seed=777)
    x = pool["crop"].float() / 255
    plain = judge_scores(judge, x, pool["identity"], gallery["reference"], gallery["identity"])
    rotated = judge_scores(judge, hue_rotate(x, 2 * math.pi / 3), pool["identity"], gallery["reference"],
                           gallery["identity"])
    assert plain["shape"].mean() >= 0.85 and plain["identity"].mean() >= 0.7
    assert abs(plain["shape"].mean() - rotated["shape"].mean()) <= 0.1


def test_evaluate_command_refuses_what_it_cannot_evaluate(tmp_path, capsys):
    from anydoor import evaluate
    with pytest.raises(SystemExit):
        evaluate.main([str(tmp_path)])                                   # not a model folder
    assert "neither a pipeline folder" in capsys.readouterr().err
    from anydoor.cli import shipped_model
    with pytest.raises(SystemExit):
        evaluate.main([str(shipped_model()), "--num-identities", "65"])  # would take training identities
    assert "`num_identities` must be an int in [1, 64]" in capsys.readouterr().err


def test_shipped_model_judged_record():
    "The shipped anydoor-tiny judged on 64 held-out identities x 3 seeds (`python -m anydoor.evaluate`), as the README quotes it."
    rec = json.loads((shipped_weights_dir() / "anydoor-tiny-judged.json").read_text())
    assert rec["num_identities"] == 64 and rec["num_pairs"] == 64 and rec["seeds"] == [0, 1, 2]
    assert rec["command"].startswith("python -m anydoor.evaluate anydoor/weights/anydoor-tiny")
    for k in ("shape", "texture", "emblem", "identity"):
        j = f"judge_{k}"
        assert rec[j + "_copy_paste"] > 2 * rec[j + "_chance"] and rec[j + "_ground_truth"] > 2 * rec[j + "_chance"]
        assert 0 <= rec[j] <= 1 and rec[j + "_ci95"] >= 0
    # what the README says of it: every attribute and both identities above chance, intervals apart; the issue's
    # targets for shape (0.6), texture (0.45), learned and colour identity (0.4 among 64), the scene (24 dB) and the
    # box (above a fill with its mean colour) met
    for k in ("shape", "texture", "emblem", "identity"):
        assert rec[f"judge_{k}"] - rec[f"judge_{k}_ci95"] > rec[f"judge_{k}_chance"], k
    assert rec["identity_top1"] - rec["identity_top1_ci95"] > rec["identity_chance"]
    assert rec["judge_shape"] >= 0.6 and rec["judge_texture"] >= 0.45 and rec["judge_identity"] >= 0.4
    assert rec["identity_top1"] >= 0.4 and rec["psnr_background"] > 24
    assert rec["psnr_box"] > rec["psnr_box_mean_fill"]     # in the box above a flat fill (by 0.08 dB: a thin margin)


def test_evaluate_command_uses_the_collage_the_model_was_trained_on(monkeypatch, tmp_path):
    "No --collage: the model's recorded collage (here raw); --collage overrides it."
    from anydoor import evaluate
    from anydoor.model import AnyDoor
    AnyDoor.tiny(seed=0, collage="raw").save_pretrained(tmp_path / "m")
    seen = []
    def stop(model, n, collage, pairs):
        seen.append(collage); raise ValueError("stop here")
    monkeypatch.setattr(evaluate, "heldout_batch", stop)
    for extra in ([], ["--collage", "hifreq_4px"]):
        with pytest.raises(SystemExit):
            evaluate.main([str(tmp_path / "m"), *extra])
    assert seen == ["raw", "hifreq_4px"]


def test_evaluate_command_writes_metrics_and_a_labelled_grid(tmp_path):
    "`--out` and `--grid`: the metrics JSON and the first pairs as a PNG with a header naming the columns."
    from PIL import Image
    from anydoor import evaluate
    from anydoor.model import AnyDoor
    AnyDoor.tiny(seed=0).save_pretrained(tmp_path / "m")
    m = evaluate.main([str(tmp_path / "m"), "--num-identities", "4", "--seeds", "0", "--steps", "2",
                       "--out", str(tmp_path / "m.json"), "--grid", str(tmp_path / "g.png")])
    assert json.loads((tmp_path / "m.json").read_text())["num_pairs"] == 4 == m["num_pairs"]
    g = Image.open(tmp_path / "g.png")
    scale = max(1, 256 // 32)
    assert g.size == (5 * 32 * scale, 4 * 32 * scale + 24)        # 5 columns, 4 rows, the header
    header = np.asarray(g.convert("L"))[:24]
    assert (header < 128).any() and (header == 255).mean() > 0.8  # text on white
