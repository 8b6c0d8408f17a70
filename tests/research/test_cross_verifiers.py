"""docs/research/scripts/cross_verifiers.py on a tiny run: scoring another run's samples here gives what the
score stage stored when the verifier is the same; the metrics are those of gsmv.metrics on the first N."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from gsmv.artifacts import RunPaths, read_shards

SCRIPTS = Path(__file__).resolve().parents[2] / "docs" / "research" / "scripts"
sys.path.insert(0, str(SCRIPTS))
import cross_verifiers  # noqa: E402


@pytest.mark.slow
def test_a_copy_of_the_verifier_scores_the_samples_as_the_score_stage_did(smoke_synth_run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(smoke_synth_run, other)
    own, cross = tmp_path / "own.json", tmp_path / "cross.json"
    assert cross_verifiers.main(["--samples", str(smoke_synth_run), "--verifier", str(smoke_synth_run),
                                 "--n", "3", "--out", str(own)]) == 0
    assert cross_verifiers.main(["--samples", str(smoke_synth_run), "--verifier", str(other), "--n", "3",
                                 "--out", str(cross)]) == 0
    a, b = json.loads(own.read_text()), json.loads(cross.read_text())
    assert not a["scored_here"] and b["scored_here"]
    for key in ("best_of_3", "majority_at_3", "sample_accuracy", "pass_at_3", "problems", "problems_with_both_labels"):
        assert a[key] == b[key], key
    assert a["within_auc"] == pytest.approx(b["within_auc"], abs=1e-6)
    # The samples' own accuracy over their first 3, from the shards directly.
    t = read_shards(RunPaths(smoke_synth_run).samples("test"), ["sample_idx", "is_correct"]).table.to_pylist()
    first = [r["is_correct"] for r in t if r["sample_idx"] < 3]
    assert a["sample_accuracy"]["value"] == pytest.approx(np.mean(first))
    assert a["sample_accuracy"]["ci"][0] <= a["sample_accuracy"]["value"] <= a["sample_accuracy"]["ci"][1]
