"End-to-end tests of the training app: experiments compose and run, resume is exact, crashes lose nothing."
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from anydoor.config import compose, list_experiments
from anydoor.model import AnyDoor
from anydoor.train import latest_checkpoint, train

FAST = ["model.pretrained=random", "logger=none", "eval.enabled=false", "trainer.batch_size=2", "trainer.log_every=1",
        "trainer.sample_every=0", "data.num_workers=0"]


def losses(run_dir):
    return [json.loads(l)["loss"] for l in open(Path(run_dir) / "metrics.jsonl")]


@pytest.mark.parametrize("name", list_experiments())
def test_every_experiment_composes_and_trains(name, tmp_path):
    cfg = compose([f"experiment={name}", *FAST, "trainer.max_steps=2", "trainer.checkpoint_every=2",
                   f"run_dir={tmp_path}"])
    summary = train(cfg)
    assert summary["step"] == 2 and summary["name"] == name
    assert torch.isfinite(torch.tensor(summary["loss"]))
    assert (tmp_path / "checkpoints" / "step_000002" / "trainable.safetensors").exists()
    assert json.loads((tmp_path / "summary.json").read_text())["step"] == 2


def test_resume_equals_uninterrupted(tmp_path):
    common = FAST + ["trainer.checkpoint_every=2", "id.reference_dropout=0.5"]
    train(compose(common + ["trainer.max_steps=4", f"run_dir={tmp_path / 'full'}"]))
    train(compose(common + ["trainer.max_steps=2", f"run_dir={tmp_path / 'part'}"]))
    train(compose(common + ["trainer.max_steps=4", f"resume={tmp_path / 'part'}"]))
    assert losses(tmp_path / "full") == pytest.approx(losses(tmp_path / "part"), abs=1e-6)
    from safetensors.torch import load_file
    a = load_file(tmp_path / "full" / "checkpoints" / "step_000004" / "trainable.safetensors")
    b = load_file(tmp_path / "part" / "checkpoints" / "step_000004" / "trainable.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


KILL_MID_CHECKPOINT = r"""
import os, sys, torch
import anydoor.train as T
from anydoor.config import compose
real_save = torch.save
def dying_save(obj, f, *a, **k):
    # kill -9 in the middle of writing the step-4 checkpoint: a partial file, no clean-up
    if isinstance(obj, dict) and obj.get("step") == 4:
        open(f, "wb").write(b"partial")
        os._exit(9)
    return real_save(obj, f, *a, **k)
T.torch.save = dying_save
T.train(compose(sys.argv[1:]))
"""


def test_killed_mid_checkpoint_resumes(tmp_path):
    run = tmp_path / "run"
    args = FAST + ["trainer.checkpoint_every=2", "trainer.max_steps=6", f"run_dir={run}"]
    p = subprocess.run([sys.executable, "-c", KILL_MID_CHECKPOINT, *args], capture_output=True, text=True)
    assert p.returncode == 9, p.stderr[-2000:]
    assert latest_checkpoint(run).name == "step_000002"          # the half-written step 4 is not taken
    assert any(p.name.startswith(".tmp_step_000004") for p in (run / "checkpoints").iterdir())
    assert [json.loads(l)["step"] for l in open(run / "metrics.jsonl")] == [1, 2, 3, 4]   # steps 3, 4 are re-done
    summary = train(compose(FAST + ["trainer.checkpoint_every=2", "trainer.max_steps=6", f"resume={run}"]))
    assert summary["step"] == 6 and latest_checkpoint(run).name == "step_000006"
    assert [json.loads(l)["step"] for l in open(run / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]  # one row per step
    assert not [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp_")]
    train(compose(FAST + ["trainer.checkpoint_every=2", "trainer.max_steps=6", f"run_dir={tmp_path / 'ref'}"]))
    assert losses(run)[-4:] == pytest.approx(losses(tmp_path / "ref")[-4:], abs=1e-6)


def test_non_finite_loss_stops_and_keeps_checkpoint(tmp_path, monkeypatch):
    import anydoor.train as T
    real, calls = T.training_losses, {"n": 0}
    def poisoned(*a, **k):
        l, t = real(*a, **k); calls["n"] += 1
        return (l * float("inf") if calls["n"] >= 4 else l), t
    monkeypatch.setattr(T, "training_losses", poisoned)
    with pytest.raises(FloatingPointError, match=r"non-finite training loss \(.*\) at step 4; stopped. Last good checkpoint: .*step_000002"):
        train(compose(FAST + ["trainer.checkpoint_every=2", "trainer.max_steps=6", f"run_dir={tmp_path}"]))
    assert latest_checkpoint(tmp_path).name == "step_000002"


def test_wandb_offline_logs_images(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose([*FAST, "logger=wandb", "trainer.max_steps=2", "trainer.sample_every=1", "trainer.checkpoint_every=2",
                   "eval.enabled=true", "eval.num_identities=4", "eval.seeds=[0]", "eval.num_inference_steps=2",
                   "logger.checkpoint_artifacts=true", f"run_dir={tmp_path}"])
    summary = train(cfg)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    images = [str(p.relative_to(runs[0])) for p in runs[0].glob("files/media/images/**/*.png")]
    assert any("/samples/" in p for p in images) and any("/eval/" in p for p in images), images
    assert "identity_top1" in summary and (tmp_path / "summary.json").exists()
    # the judge's readings reach the summary and the W&B run, each with its interval and baselines
    for k in ("shape", "texture", "emblem", "identity"):
        for suffix in ("", "_ci95", "_ground_truth", "_copy_paste", "_chance"):
            assert f"judge_{k}{suffix}" in summary, f"judge_{k}{suffix}"
    logged = (runs[0] / "files" / "wandb-summary.json")
    if logged.exists(): assert "eval/judge_identity" in json.loads(logged.read_text())
    # the evaluation as W&B tables (the judge's readings; every held-out pair with its pictures) and the model as an artifact
    tables = {p.name.split("_")[0]: json.loads(p.read_text()) for p in runs[0].glob("files/media/table/eval/*.table.json")}
    assert tables["judge"]["columns"][:2] == ["reading", "after"] and len(tables["judge"]["data"]) == 5
    assert tables["pairs"]["columns"][:5] == ["identity", "reference", "hint", "insertion", "ground truth"]
    assert len(tables["pairs"]["data"]) == 4
    # wandb's writer can still be flushing the run file when `finish()` returns: wait for the artifacts (up to 30 s)
    wanted = (b"anydoor-seed0-model", b"anydoor-seed0-checkpoint", b"step_2")
    for _ in range(300):
        log = next(runs[0].glob("run-*.wandb")).read_bytes()
        if all(w in log for w in wanted): break
        time.sleep(0.1)
    assert all(w in log for w in wanted), [w for w in wanted if w not in log]


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match="`timesteps.mode` must be one of"):
        compose(["timesteps.mode=random"])
    with pytest.raises(ValueError, match=r"`data.kinds\[1\]` must be one of \[0, 1, 2\], got 5"):
        compose(["data.kinds=[0,5]"])
    with pytest.raises(ValueError, match="`eval.num_identities` must be <= 64"):   # more would leak training identities
        compose(["eval.num_identities=65"])
    with pytest.raises(FileNotFoundError, match="`resume`: no complete checkpoint"):
        train(compose(FAST + ["resume=/nonexistent/run"]))


def test_accelerate_two_cpu_processes_train_and_save_once(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # --multi_gpu is accelerate's multi-process launcher; with no GPU, train() asks for CPU processes (gloo)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "anydoor.train", *FAST,
           "trainer.max_steps=2", "trainer.checkpoint_every=2", f"hydra.run.dir={tmp_path}"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    ckpts = [d for d in (tmp_path / "checkpoints").iterdir() if d.name.startswith("step_")]
    assert [d.name for d in ckpts] == ["step_000002"]
    assert len(open(tmp_path / "metrics.jsonl").readlines()) == 2     # one writer, steps 1 and 2
    state = torch.load(ckpts[0] / "training_state.pt", weights_only=False)
    assert len(state["rng"]) == 2                                     # both processes' random states


def test_a_folder_holds_one_run(tmp_path):
    "A second fresh run in a run's folder is refused (resume continues it); a finished run resumes to valid JSON."
    args = FAST + ["trainer.max_steps=2", "trainer.checkpoint_every=2"]
    first = train(compose(args + [f"run_dir={tmp_path}"]))
    wandb_free = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(FileExistsError, match="already holds a run: pass resume="):
        train(compose(args + [f"run_dir={tmp_path}"]))
    assert (tmp_path / "metrics.jsonl").read_text() == wandb_free          # nothing appended by the refused run
    again = train(compose(args + [f"resume={tmp_path}"]))                   # nothing left to do
    text = (tmp_path / "summary.json").read_text()
    assert again["step"] == 2 and again["loss"] == first["loss"]
    assert "NaN" not in text and json.loads(text)["loss"] == first["loss"]


def _cli(cwd, *args):
    env = dict(os.environ, WANDB_MODE="offline")
    return subprocess.run([sys.executable, "-m", "anydoor.train", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=600)


def test_sweep_jobs_and_same_second_runs_get_their_own_folders(tmp_path):
    "`-m trainer.lr=a,b` (same name, same seed) is two folders, two logs, two W&B runs; so are two runs started together."
    args = [*FAST, "logger=wandb", "trainer.max_steps=1", "trainer.checkpoint_every=1"]
    res = _cli(tmp_path, "-m", *args, "trainer.lr=1e-4,3e-4", "hydra.sweep.dir=sweep")
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = sorted(p.parent for p in (tmp_path / "sweep").rglob("summary.json"))
    assert len(jobs) == 2, jobs
    assert [len(open(j / "metrics.jsonl").readlines()) for j in jobs] == [1, 1]
    assert {"0.0001", "0.0003"} == {j.joinpath("config.yaml").read_text().split("lr: ")[1].split()[0] for j in jobs}
    ids = [(j / "wandb_id.txt").read_text() for j in jobs]
    assert len(set(ids)) == 2
    procs = [subprocess.Popen([sys.executable, "-m", "anydoor.train", *FAST, "trainer.max_steps=1", "trainer.checkpoint_every=1"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0], [p.stderr.read()[-2000:] for p in procs]
    runs = [p.parent for p in (tmp_path / "runs").rglob("summary.json")]
    assert len(runs) == 2 and all(len(open(r / "metrics.jsonl").readlines()) == 1 for r in runs)
    # resuming leaves no empty Hydra folder behind
    before = {p for p in (tmp_path / "runs").rglob("*") if p.is_dir()}
    res = _cli(tmp_path, *FAST, f"resume={runs[0]}", "trainer.max_steps=2", "trainer.checkpoint_every=1")
    assert res.returncode == 0, res.stderr[-3000:]
    assert {p for p in (tmp_path / "runs").rglob("*") if p.is_dir()} - before == {runs[0] / "checkpoints" / "step_000002"}


class _Payload:
    "A harmless stand-in for a malicious pickle: unpickling it would create a file."
    def __init__(self, path): self.path = str(path)
    def __reduce__(self): return (Path.touch, (Path(self.path),))


def test_resume_never_runs_a_pickle(tmp_path):
    run = tmp_path / "run"
    train(compose(FAST + ["trainer.max_steps=2", "trainer.checkpoint_every=2", f"run_dir={run}"]))
    state = latest_checkpoint(run) / "training_state.pt"
    good = torch.load(state, weights_only=True)                                  # what resume reads loads safely
    assert good["step"] == 2
    marker = tmp_path / "pwned"
    torch.save({"step": 2, "optimizer": good["optimizer"], "rng": _Payload(marker)}, state)
    with pytest.raises(ValueError, match="holds pickled objects that a safe load refuses"):
        train(compose(FAST + ["trainer.max_steps=4", "trainer.checkpoint_every=2", f"resume={run}"]))
    assert not marker.exists()


def test_fp16_on_cpu_and_diverged_weights_are_refused(tmp_path):
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'fp16' needs a CUDA GPU"):
            train(compose(FAST + ["trainer.mixed_precision=fp16", "trainer.max_steps=1", f"run_dir={tmp_path / 'fp16'}"]))
    with pytest.raises(FloatingPointError, match="non-finite"):                 # a finite but absurd learning rate
        train(compose(FAST + ["trainer.lr=1e30", "trainer.grad_clip=0", "trainer.max_steps=4", "trainer.checkpoint_every=4",
                              f"run_dir={tmp_path / 'lr'}"]))
    assert not (tmp_path / "lr" / "model").exists()


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_counts_reach_the_log_from_every_worker(tmp_path, monkeypatch, workers):
    from anydoor.data import Skip, TeleportToyDataset
    real = TeleportToyDataset.checked_pair
    def flaky(self, candidate, rng):
        if candidate % 3 == 0: raise Skip("test_unusable", f"candidate {candidate}")
        return real(self, candidate, rng)
    monkeypatch.setattr(TeleportToyDataset, "checked_pair", flaky)       # inherited by forked workers
    args = [a for a in FAST if not a.startswith("data.num_workers")]
    train(compose(args + [f"data.num_workers={workers}", "trainer.max_steps=3", "trainer.checkpoint_every=3",
                          f"run_dir={tmp_path}"]))
    rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    assert rows[-1]["data/samples"] == 6 and rows[-1].get("data/test_unusable", 0) >= 1, rows[-1]
    assert all(rows[i]["data/samples"] < rows[i + 1]["data/samples"] for i in range(len(rows) - 1))


def test_wandb_runs_group_by_experiment(tmp_path, monkeypatch):
    "group = experiment name, job_type = train, the name carries the seed: ablation rows group in the W&B UI."
    import wandb
    seen = {}
    class FakeRun:
        summary = {}
        def log(self, *a, **k): pass
        def finish(self): pass
        def log_artifact(self, *a, **k): pass
    monkeypatch.setattr(wandb, "init", lambda **kw: (seen.update(kw), FakeRun())[1])
    train(compose([*FAST, "experiment=abl_id_none", "logger=wandb", "model.pretrained=random", "trainer.max_steps=1",
                   "trainer.checkpoint_every=1", "seed=3", f"run_dir={tmp_path}"]))
    assert seen["group"] == "abl_id_none" and seen["job_type"] == "train" and seen["name"] == "abl_id_none-seed3"
    assert seen["config"]["seed"] == 3


OVERRIDE_TAGS = """
import sys, wandb
class FakeRun:
    summary = {}
    def log(self, *a, **k): pass
    def finish(self): pass
    def log_artifact(self, *a, **k): pass
wandb.init = lambda **kw: (print("TAGS", kw["tags"]), FakeRun())[1]
from anydoor.train import main
sys.argv = ["anydoor.train", *sys.argv[1:]]
main()
"""


def test_command_line_overrides_become_wandb_tags(tmp_path):
    args = [a for a in FAST if not a.startswith("logger=")] + ["logger=wandb", "trainer.max_steps=1",
                                                                "trainer.checkpoint_every=1", "trainer.lr=3e-4"]
    res = subprocess.run([sys.executable, "-c", OVERRIDE_TAGS, *args], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    line = [l for l in res.stdout.splitlines() if l.startswith("TAGS")][0]
    assert "'trainer.lr=3e-4'" in line and "'logger=wandb'" in line


def test_training_timesteps_come_from_the_models_own_sampler():
    "One owner for the training timesteps: the model's setting (timestep_mode), which build_model takes from cfg.timesteps."
    from dataclasses import replace
    from anydoor.config import compose
    from anydoor.train import build_model, training_losses, LossModule
    cfg = compose(["experiment=abl_full", "model.pretrained=random", "logger=none"])
    model = build_model(cfg)
    assert model.settings.timestep_mode == cfg.timesteps.mode == "adaptive"
    batch = dict(reference=torch.rand(64, 3, 32, 32), hint=torch.rand(64, 4, 32, 32) * 2 - 1,
                 target=torch.rand(64, 3, 32, 32) * 2 - 1, data_kind=torch.zeros(64, dtype=torch.long))
    draw = lambda m: training_losses(LossModule(m), batch, cfg, torch.Generator().manual_seed(0))[1]
    t_adaptive = draw(model)
    assert (t_adaptive < 500).float().mean() > 0.6            # images: mostly the late half (SPEC §7)
    model.settings = replace(model.settings, timestep_mode="uniform")
    t_uniform = draw(model)                                   # cfg still says adaptive: the model decides
    assert (t_uniform >= 500).float().mean() > 0.3 and not torch.equal(t_uniform, t_adaptive)


def test_before_fine_tuning_is_judged_as_the_foundation_predicts(tmp_path, monkeypatch):
    "With model.prediction_type=v_prediction the fine-tune learns v, but the 'before' column is the ε foundation as it was."
    import anydoor.train as T
    seen = []
    def fake_eval(model, cfg, logger, step, prefix="eval"):
        seen.append((prefix, model.noise_scheduler.config.prediction_type)); return {"identity_top1": 0.0}
    monkeypatch.setattr(T, "_evaluate_and_log", fake_eval)
    monkeypatch.setattr(T, "format_summary", lambda summary: "")
    train(compose([*FAST, "model.prediction_type=v_prediction", "eval.enabled=true", "eval.before=true",
                   "trainer.max_steps=1", "trainer.checkpoint_every=1", f"run_dir={tmp_path}"]))
    assert seen == [("eval_before", "epsilon"), ("eval", "v_prediction")]
    from anydoor.model import AnyDoor
    assert AnyDoor.from_pretrained(tmp_path / "model").noise_scheduler.config.prediction_type == "v_prediction"


def test_optuna_search_runs_trials_and_reports_the_best(tmp_path):
    "`hparams_search=optuna`: each trial its own run folder; the sweep ends with the best values of the objective."
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="needs hydra-optuna-sweeper (the dev/sweep extra)")
    res = _cli(tmp_path, "-m", *FAST, "trainer.max_steps=2", "trainer.checkpoint_every=2", "hparams_search=optuna",
               "objective=loss", "hydra.sweeper.direction=minimize", "hydra.sweeper.n_trials=2", "hydra.sweep.dir=sweep")
    assert res.returncode == 0, res.stderr[-3000:]
    trials = sorted(p.parent for p in (tmp_path / "sweep").rglob("summary.json"))
    assert len(trials) == 2
    lrs = [float(t.joinpath("config.yaml").read_text().split("lr: ")[1].split()[0]) for t in trials]
    assert lrs[0] != lrs[1] and all(3e-5 <= lr <= 1e-3 for lr in lrs)        # values proposed from the search space
    best = (tmp_path / "sweep" / "optimization_results.yaml").read_text()
    loss = {json.loads(t.joinpath("summary.json").read_text())["loss"] for t in trials}
    assert f"best_value: {min(loss)}" in best


def test_objective_must_be_a_number_of_the_summary():
    from anydoor.train import objective_value
    summary = {"step": 2, "loss": 0.5, "run_dir": "runs/x", "name": "anydoor"}
    assert objective_value(summary, "loss") == 0.5 and objective_value(summary, None) is summary
    with pytest.raises(ValueError, match=r"`objective` must name a number of the run's summary, got 'name'; it holds \['loss', 'step'\]"):
        objective_value(summary, "name")
    with pytest.raises(ValueError, match="needs eval.enabled=true"):
        compose(FAST + ["objective=judge_identity"])


def test_ema_is_the_saved_model_and_survives_resume(tmp_path):
    "trainer.ema_decay: the saved model is the average, not the last weights; a resumed run ends where a straight one does."
    from safetensors.torch import load_file
    args = FAST + ["trainer.checkpoint_every=2", "trainer.ema_decay=0.9"]
    straight = train(compose(args + ["trainer.max_steps=4", f"run_dir={tmp_path / 'a'}"]))
    assert straight["ema_decay"] == 0.9
    raw = load_file(str(tmp_path / "a" / "checkpoints" / "step_000004" / "trainable.safetensors"))
    saved = AnyDoor.from_pretrained(tmp_path / "a" / "model")
    named = dict(saved.named_parameters())
    assert any(not torch.equal(named[k], v) for k, v in raw.items())          # the average, not the last step
    train(compose(args + ["trainer.max_steps=2", f"run_dir={tmp_path / 'b'}"]))
    train(compose(args + ["trainer.max_steps=4", f"resume={tmp_path / 'b'}"]))
    resumed = dict(AnyDoor.from_pretrained(tmp_path / "b" / "model").named_parameters())
    assert all(torch.equal(resumed[k], named[k]) for k in raw)
    with pytest.raises(ValueError, match=r"`trainer.ema_decay` must be in \[0, 1\)"):
        compose(FAST + ["trainer.ema_decay=1"])


def test_one_override_swaps_the_id_encoder(tmp_path):
    "`id.encoder=<folder>`: a CLIP vision model instead of the toy DINOv2, trained and saved with the record of it."
    from transformers import CLIPVisionModel
    sys.path.insert(0, str(Path(__file__).parent))
    from test_id_extractor import save_tiny_clip
    save_tiny_clip(tmp_path / "clip")
    run = tmp_path / "run"
    cfg = compose(["experiment=main", f"id.encoder={tmp_path / 'clip'}", "logger=none", "eval.enabled=false",
                   "eval.before=false", "trainer.batch_size=2", "trainer.max_steps=2", "trainer.checkpoint_every=2",
                   "trainer.sample_every=0", "data.num_workers=0", f"run_dir={run}"])
    summary = train(cfg)
    assert torch.isfinite(torch.tensor(summary["loss"]))
    model = AnyDoor.from_pretrained(run / "model")
    assert isinstance(model.id_extractor.encoder, CLIPVisionModel)
    assert model.id_extractor.config.encoder_name_or_path == str(tmp_path / "clip")
    with pytest.raises(ValueError, match="`id.encoder` .* needs pretrained foundation models"):
        compose([f"id.encoder={tmp_path / 'clip'}", "model.pretrained=random"])
