"""anydoor.ablation: the table from a sweep folder, and the same table as a W&B table in an offline run."""
import json

from anydoor.ablation import main


def write_sweep(root):
    for name, base in (("abl_full", 0.30), ("abl_id_none", 0.10)):
        for seed in (0, 1, 2):
            d = root / f"{name}_seed{seed}"
            d.mkdir(parents=True)
            (d / "summary.json").write_text(json.dumps(dict(name=name, seed=seed, judge_shape=base + 0.01 * seed,
                                                            psnr_background=20.0 + seed)))


def test_table_and_wandb_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    write_sweep(tmp_path)
    table = main([str(tmp_path), "--out", str(tmp_path / "table.md"), "--wandb"])
    assert "| abl_id_none | 0.110 ± " in table and "Paired by seed against abl_full" in table
    assert (tmp_path / "table.md").read_text().startswith("| variant |")
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    logged = json.loads(next(runs[0].glob("files/media/table/ablation_table*.table.json")).read_text())
    assert logged["columns"] == ["variant", "metric", "mean", "ci95", "n"]
    rows = {(r[0], r[1]): r[2:] for r in logged["data"]}
    assert len(rows) == 4 and rows[("abl_full", "judge_shape")][2] == 3
    assert abs(rows[("abl_id_none", "judge_shape")][0] - 0.11) < 1e-9
