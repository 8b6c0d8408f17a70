"""The whole pipeline on the synthetic task (the default main job's task), with step-level truth reported
and step-level (process) labels as a verifier option."""

import json

import pytest

from gsmv import cli
from gsmv.artifacts import read_shards

pytestmark = pytest.mark.slow


def test_smoke_synth_runs_end_to_end_and_reports_step_truth(tmp_path):
    assert cli.main(["run", "--config", "smoke-synth", f"out_dir={tmp_path}", "threads=2"]) == 0
    run = tmp_path / "smoke-synth"
    manifest = json.loads((run / "manifest.json").read_text())
    assert all(rec["status"] == "done" for rec in manifest["stages"].values())
    # The run keeps the problems it used.
    info = json.loads((run / "data" / "info.json").read_text())
    assert info["task"] == "synth" and info["train"]["problems"] == 240
    assert len((run / "data" / "test.jsonl").read_text().splitlines()) == 40
    labels = json.loads((run / "labels.json").read_text())
    for split in ("train", "val"):
        assert 0.0 <= labels[split]["false_positive_rate"] <= 1.0
        assert labels[split]["strict_accuracy"] <= labels[split]["accuracy"]
    assert json.loads((run / "results.json").read_text())["n_problems"] == 40

    # Process supervision reuses the generator and the samples and retrains only the verifier.
    assert cli.main(["run", "--config", "smoke-synth", f"out_dir={tmp_path}", "name=process", "threads=2",
                     f"reuse_from={run}", "verifier.labels=process"]) == 0
    proc = json.loads((tmp_path / "process" / "manifest.json").read_text())["stages"]
    assert proc["sample-train"].get("reused_from") and not proc["train-verifier"].get("reused_from")
    events = [json.loads(x) for x in (tmp_path / "process" / "metrics.jsonl").read_text().splitlines()]
    data = next(e for e in events if e.get("stage") == "train-verifier" and e.get("event") == "data")
    assert data["labels"] == "process" and data["lm_data"] == "reference" and data["lm_examples"] > 0
    texts = read_shards(run / "samples" / "train").column("text").to_pylist()
    assert data["samples_with_wrong_steps"] > 0 and data["samples_with_wrong_steps"] <= len(texts)
