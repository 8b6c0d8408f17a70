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
def test_one_point_per_checkpoint_with_examples_seen(smoke_synth_run, tmp_path):
    out = tmp_path / "curve.json"
    assert generator_curve.main(["--run", str(smoke_synth_run), "--problems", "4", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    kept = sorted(p.name for p in (smoke_synth_run / "generator").glob("step-*"))
    assert [p["checkpoint"] for p in res["points"]] == [*kept, "final"]
    for p in res["points"]:
        assert p["examples"] == p["step"] * 16  # smoke's finetune.batch_size, one process
        assert 0.0 <= p["ci"][0] <= p["val_greedy"] <= p["ci"][1] <= 1.0
    assert res["points"][-1]["val_loss"] is not None  # the last validation pass is at the final step
