"""docs/research/scripts/generator_curve.py on a tiny run: one point per kept checkpoint and final, examples seen
from the batch size, val losses from the run's own validation passes."""

import json
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "docs" / "research" / "scripts"
sys.path.insert(0, str(SCRIPTS))
import generator_curve  # noqa: E402


@pytest.mark.slow
def test_one_point_per_checkpoint_with_examples_seen(smoke_synth_run, tmp_path, monkeypatch):
    out = tmp_path / "curve.json"
    assert generator_curve.main(["--run", str(smoke_synth_run), "--problems", "4", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    kept = sorted(p.name for p in (smoke_synth_run / "generator").glob("step-*"))
    assert [p["checkpoint"] for p in res["points"]] == [*kept, "final"]
    for p in res["points"]:
        assert p["examples"] == p["step"] * 16  # smoke's finetune.batch_size, one process
        assert 0.0 <= p["ci"][0] <= p["val_greedy"] <= p["ci"][1] <= 1.0
    assert res["points"][-1]["val_loss"] is not None  # the last validation pass is at the final step

    # A rerun measures only what --out lacks: kept checkpoints measured on as many problems are reused, final
    # (rewritten when finetune is redone) and a run of another problem count are measured again.
    measured = []
    real = generator_curve.greedy_accuracy
    monkeypatch.setattr(generator_curve, "greedy_accuracy",
                        lambda cfg, folder, probs: measured.append(folder.name) or real(cfg, folder, probs))
    assert generator_curve.main(["--run", str(smoke_synth_run), "--problems", "4", "--out", str(out)]) == 0
    assert measured == ["final"] and json.loads(out.read_text())["points"][:-1] == res["points"][:-1]
    measured.clear()
    assert generator_curve.main(["--run", str(smoke_synth_run), "--problems", "3", "--out", str(out)]) == 0
    assert measured == [*kept, "final"]
