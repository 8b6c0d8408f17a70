"""`gsmv run` under `accelerate launch` with two CPU processes (gloo): every stage finishes on both ranks."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gsmv.artifacts import read_shards

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_smoke_pipeline_on_two_cpu_processes(tmp_path):
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    assert accelerate, "accelerate's launcher is installed with gsmv"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [accelerate, "launch", "--config_file", "configs/accelerate/cpu_ddp.yaml", "-m", "gsmv", "run",
           "--config", "smoke", f"out_dir={tmp_path}", "threads=1"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    run_dir = tmp_path / "smoke"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert all(rec["status"] == "done" for rec in manifest["stages"].values())
    # Both ranks sampled and scored: every problem of every split is there exactly once per sample index.
    for folder, n in (("samples/test", 8), ("scores/test", 8), ("samples/train", 4)):
        rows = read_shards(run_dir / folder, columns=["problem_id", "sample_idx"]).table.to_pylist()
        keys = [(r["problem_id"], r["sample_idx"]) for r in rows]
        assert len(keys) == len(set(keys))
        assert {k[1] for k in keys} == set(range(n))
    assert json.loads((run_dir / "results.json").read_text())["n_problems"] == 40
