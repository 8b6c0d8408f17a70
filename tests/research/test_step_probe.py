"""docs/research/scripts/step_probe.py end to end on a tiny synth run: features at every step end, a fitted
probe, and its localization and ranking numbers in the shape the write-up quotes."""

import json
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "docs" / "research" / "scripts"
sys.path.insert(0, str(SCRIPTS))
import step_probe  # noqa: E402


@pytest.mark.slow
def test_the_probe_runs_on_a_synth_run(smoke_synth_run, tmp_path):
    out = tmp_path / "probe.json"
    assert step_probe.main(["--run", str(smoke_synth_run), "--train-samples", "300", "--bootstrap", "20",
                            "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["train_steps"] > 0 and 0.0 <= res["train_right_share"] <= 1.0
    assert set(res["localization"]["balanced"]) == {"verifier", "difficulty", "first_step", "no_error"}
    assert set(res["step_auc"]) == {"pooled", "within", "first_step_within"}
    assert res["min_aggregate"]["n"] == 8
