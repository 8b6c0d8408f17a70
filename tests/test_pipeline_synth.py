"""The whole pipeline on the synthetic task (the default main job's task), with step-level truth reported
and step-level (process) labels as a verifier option."""

import json
import shutil

import pytest

from gsmv import cli
from gsmv.artifacts import read_shards

pytestmark = pytest.mark.slow


def test_smoke_synth_runs_end_to_end_and_reports_step_truth(smoke_synth_run, tmp_path):
    run = smoke_synth_run
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
    texts = read_shards(run / "samples" / "train").table.column("text").to_pylist()
    assert data["samples_with_wrong_steps"] > 0 and data["samples_with_wrong_steps"] <= len(texts)


def test_value_guided_search_stage_resumes_and_is_compared_at_equal_budget(smoke_synth_run, tmp_path):
    run = tmp_path / "smoke-synth"
    shutil.copytree(smoke_synth_run, run)
    args = ["--config", "smoke-synth", f"out_dir={tmp_path}", "threads=2"]
    search = ["search.beams=[1,2]", "search.problems=6", "search.problems_per_shard=4", "search.max_steps=4",
              "search.expansions=2"]
    assert cli.main(["search", *args, *search]) == 0
    shards = sorted((run / "search").glob("shard-*.parquet"))
    assert len(shards) == 2
    table = read_shards(run / "search").table
    assert table.num_rows == 6 * 2 and sorted(set(table.column("beams").to_pylist())) == [1, 2]
    assert all(g >= n for g, n in zip(table.column("generated_tokens").to_pylist(),
                                      table.column("n_tokens").to_pylist(), strict=True))
    done = json.loads((run / "search" / "done.json").read_text())
    assert done["problems"] == 6 and done["expansions"] == 2 and done["beams"] == [1, 2]
    # A killed search resumes: a lost shard is searched again, identically (seeds are per problem and step).
    before = shards[1].read_bytes()
    rows_before = read_shards(run / "search").table.to_pylist()
    shards[1].unlink()
    (run / "search" / "done.json").unlink()
    assert cli.main(["search", *args, *search]) == 0
    assert read_shards(run / "search").table.to_pylist() == rows_before
    assert shards[1].read_bytes() == before
    # evaluate adds the equal-budget comparison on the searched problems, only with the settings the search
    # ran with (another config's search is left out, never compared).
    assert cli.main(["evaluate", *args]) == 0
    assert "budget" not in json.loads((run / "results.json").read_text())
    assert cli.main(["evaluate", *args, *search]) == 0
    res = json.loads((run / "results.json").read_text())
    b = res["budget"]
    assert b["problems"] == 6 and b["strategies"]["search"]["x"] == [1, 2]
    assert b["strategies"]["best_of_n"]["x"][-1] == res["n_samples"]
    assert all(t > 0 for t in b["strategies"]["search"]["scored_tokens"])
    # --redo removes a stage's outputs even when this config does not enable the stage (search's, made with
    # the old verifier, would otherwise outlive their manifest entry).
    assert cli.main(["run", *args, "--redo", "search"]) == 0
    assert not (run / "search").exists()
