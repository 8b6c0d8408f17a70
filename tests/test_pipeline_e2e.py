"""End to end: the smoke preset through `gsmv run`, an uninterrupted run against one killed and resumed.

The killed run gets SIGKILL while it is inside finetuning, sampling, verifier training, scoring and
value-guided search; each rerun of `gsmv run` must resume, and the final results.json must equal the
uninterrupted run's. The uninterrupted run's output, sent to a file as `gsmv run > log 2>&1` sends it, must be a
log a person can read.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gsmv.artifacts import read_shards
from gsmv.formatting import format_table

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


# Search on, small, in shards of 2 problems so that a kill can land between shards.
SEARCH = ["search.enabled=true", "search.beams=[1,2]", "search.expansions=2", "search.max_steps=4",
          "search.problems_per_shard=2"]


def gsmv_cmd(out_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "gsmv", "run", "--config", "smoke", f"out_dir={out_dir}", *SEARCH, *extra]


def run_to_end(out_dir: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(gsmv_cmd(out_dir), cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def kill_when(out_dir: Path, ready, timeout: float = 300) -> bool:
    """Start `gsmv run`, SIGKILL it as soon as `ready(run_dir)` holds; False if it finished first."""
    proc = subprocess.Popen(gsmv_cmd(out_dir), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    run_dir = out_dir / "smoke"
    while proc.poll() is None and time.time() < deadline:
        if ready(run_dir):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.05)
    proc.wait()
    return False


def stage_running(name: str, extra=lambda d: True):
    def ready(run_dir: Path) -> bool:
        try:
            m = json.loads((run_dir / "manifest.json").read_text())
        except (OSError, json.JSONDecodeError):
            return False
        return m["stages"].get(name, {}).get("status") == "running" and extra(run_dir)

    return ready


def some_files(pattern: str):
    return lambda d: any(d.glob(pattern))


def results_without_timing(run_dir: Path) -> dict:
    res = json.loads((run_dir / "results.json").read_text())
    res.pop("meta", None)
    return res


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory) -> tuple[Path, str]:
    """An uninterrupted run, its stdout and stderr sent to one file (not a terminal): (out_dir, the log)."""
    out = tmp_path_factory.mktemp("clean")
    log = out / "run.log"
    with log.open("w") as f:
        proc = subprocess.run(gsmv_cmd(out), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=900)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    return out, text


def test_the_log_of_a_run_sent_to_a_file_is_readable(clean_run):
    out, log = clean_run
    run_dir = out / "smoke"
    lines = log.splitlines()
    assert "\r" not in log  # no progress-bar redraws
    assert len(lines) < 100, f"{len(lines)} lines"
    stages = list(json.loads((run_dir / "manifest.json").read_text())["stages"])
    assert len(stages) >= 11  # every stage of the smoke preset, search included
    for stage in stages:
        start = [i for i, x in enumerate(lines) if x.startswith(f"[{stage}] started: ")]
        end = [i for i, x in enumerate(lines) if x.startswith(f"[{stage}] done in ")]
        assert len(start) == 1 and len(end) == 1 and start[0] < end[0], stage
    done = {x.split("]")[0][1:]: x for x in lines if " done in " in x}
    assert "train loss" in done["finetune"] and "val loss" in done["finetune"]
    assert "% of 880 samples right" in done["label"] and "coverage" in done["label"]
    assert "320 test samples scored" in done["score"]
    assert "test@1" in done["evaluate"] and "best-of-8" in done["evaluate"]
    # It ends with the results table, as `gsmv evaluate` prints it, and where the report is.
    table = format_table(json.loads((run_dir / "results.json").read_text()))
    assert "\n".join(lines[-len(table.splitlines()) - 1:-1]) == table
    assert lines[-1].startswith(f"report: {run_dir / 'report.md'} and {run_dir / 'report.html'}")


def test_smoke_pipeline_resumes_after_sigkill_to_the_same_results(clean_run, tmp_path):
    clean, _ = clean_run
    run_dir = clean / "smoke"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert all(rec["status"] == "done" for rec in manifest["stages"].values())
    for f in ("results.json", "report.md", "report.html", "config.yaml"):
        assert (run_dir / f).is_file(), f

    # A second run finds everything done and redoes nothing.
    again = run_to_end(clean)
    assert again.stdout.count("skipped") >= len(manifest["stages"])

    killed = tmp_path / "killed"
    kill_points = [
        stage_running("finetune", some_files("generator/step-*")),
        stage_running("sample-train", some_files("samples/train/shard-*.parquet")),
        stage_running("train-verifier", some_files("verifier/step-*")),
        stage_running("score", some_files("scores/test/shard-*.parquet")),
        stage_running("search", some_files("search/shard-*.parquet")),
    ]
    hits = [kill_when(killed, ready) for ready in kill_points]
    print("kill points hit:", hits)
    assert sum(hits) >= 3, f"too few kill points were reached: {hits}"
    run_to_end(killed)

    assert results_without_timing(killed / "smoke") == results_without_timing(run_dir)
    # Stronger than the summary numbers: every sample and every verifier score is the same.
    assert "budget" in results_without_timing(run_dir)
    for folder in ("samples/train", "samples/val", "samples/test", "samples/test_greedy", "scores/test", "search"):
        a = read_shards(run_dir / folder).table.to_pylist()
        b = read_shards(killed / "smoke" / folder).table.to_pylist()
        assert a == b, folder
    # Nothing half-written: every shard reads, and no temporary file is left in the run folder.
    for shard in (killed / "smoke").rglob("shard-*.parquet"):
        pq.read_table(shard)
    leftovers = [p for p in (killed / "smoke").rglob("*.tmp")]
    assert leftovers == []
