"""End to end: the smoke preset through `gsmv run`, an uninterrupted run against one killed and resumed.

The killed run gets SIGKILL while it is inside finetuning, sampling, verifier training, scoring and
value-guided search; each rerun of `gsmv run` must resume, and the final results.json must equal the
uninterrupted run's.
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


def test_smoke_pipeline_resumes_after_sigkill_to_the_same_results(tmp_path):
    clean = tmp_path / "clean"
    proc = run_to_end(clean)
    for stage in ("finetune", "sample-train", "train-verifier", "sample-test", "score", "search", "evaluate",
                  "report"):
        assert f"[{stage}]" in proc.stdout
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
