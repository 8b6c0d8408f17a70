"""`gsmv evaluate` on one run folder, timed in this process (BENCHMARKS.md, "The step-level evaluation").

    OMP_NUM_THREADS=1 python benchmarks/bench_evaluate_run.py runs/synth/config.yaml
    # the code before a change, from a git worktree of it (a config written by newer code may need its new
    # keys removed first):
    PYTHONPATH=/tmp/old/src OMP_NUM_THREADS=1 python benchmarks/bench_evaluate_run.py /tmp/old-config.yaml

It rewrites the run's results.json (the same numbers for the same code): keep a copy if that matters.
"""

import sys
import time

from gsmv import evaluate
from gsmv.config import load_config

if __name__ == "__main__":
    config = sys.argv[1]
    cfg = load_config(config, ["threads=1", *sys.argv[2:]])
    t0 = time.perf_counter()
    evaluate.main(cfg)
    print(f"{config}: evaluate {time.perf_counter() - t0:.2f} s")
