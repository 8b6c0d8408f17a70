"""docs/research/scripts/smol_training_modes.py: the within-problem AUC interval and the modes' report."""

import json
import sys
from pathlib import Path

import numpy as np

SCRIPTS = Path(__file__).resolve().parents[2] / "docs" / "research" / "scripts"
sys.path.insert(0, str(SCRIPTS))
import smol_training_modes as stm  # noqa: E402


def test_auc_interval_resamples_only_problems_with_both_labels():
    # p0 ranks perfectly (AUC 1), p1 backwards (AUC 0), p2 has only wrong samples and must not count.
    pids = ["p0"] * 4 + ["p1"] * 4 + ["p2"] * 3
    scores = np.array([0.9, 0.8, 0.1, 0.2, 0.1, 0.2, 0.9, 0.8, 0.5, 0.6, 0.7])
    labels = np.array([1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    lo, hi = stm.auc_within_ci(pids, scores, labels)
    assert (lo, hi) == (0.0, 1.0)  # resampling two problems of AUC 1 and 0 reaches both ends
    lo, hi = stm.auc_within_ci(pids[:4] + pids[8:], np.r_[scores[:4], scores[8:]], np.r_[labels[:4], labels[8:]])
    assert (lo, hi) == (1.0, 1.0)
    assert np.isnan(stm.auc_within_ci(pids[8:], scores[8:], labels[8:])).all()  # no problem counts


def test_report_tabulates_every_mode_and_draws_the_curves(tmp_path, capsys):
    t0 = {"train_seconds": 0.0, "val_auc_within": 0.57, "val_auc_within_ci": [0.46, 0.70], "val_auc": 0.81,
          "val_best_of_n": 0.17}
    for mode, end in (("full", 0.59), ("top4", 0.58)):
        run = {"mode": mode, "lr": 1e-4, "trainable_params": 14_000_000, "adamw_state_mb": 108.0,
               "peak_rss_mb": 2600.0, "value_examples_per_s": 2.5, "val_problems": 100,
               "points": [t0, {**t0, "train_seconds": 600.0, "val_auc_within": end}]}
        (tmp_path / f"{mode}.json").write_text(json.dumps(run))
    (tmp_path / "t0.json").write_text(json.dumps(t0))  # the shared start and the setup are not modes
    (tmp_path / "setup.json").write_text(json.dumps({"config": "synth-smol", "overrides": [], "val_problems": 100}))
    stm.report(tmp_path, tmp_path / "curves.png")
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line]
    assert [r.split("|")[1].strip() for r in rows[1:]] == ["full", "top4"]
    assert "10 min 0.590 [0.46, 0.70]" in rows[1] and "0 min 0.570" in rows[2]
    assert (tmp_path / "curves.png").stat().st_size > 0
