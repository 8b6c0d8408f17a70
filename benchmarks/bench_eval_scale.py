"""`gsmv evaluate` and `gsmv report` at the paper's largest N: time and peak memory.

    python benchmarks/bench_eval_scale.py                       # 1319 problems x 3200 samples
    python benchmarks/bench_eval_scale.py --problems 200 --samples 400   # a quick look
    python benchmarks/bench_eval_scale.py --tokens 72                    # solutions of real length

Builds a run folder with synthetic content in the stages' own schemas: samples/test (short solutions whose
final answer is right with a per-problem probability), scores/test (a score that is weakly higher for right
samples, no per-token values) and samples/test_greedy, for --problems synthetic-task test problems. Then runs
evaluate and report, each in its own process, and prints each one's wall time and peak RSS (the child
process's ru_maxrss), so the shard building does not count.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from gsmv.artifacts import RunPaths, shard_path, write_parquet
from gsmv.config import load_config
from gsmv.data.tasks import load_split
from gsmv.sample import SAMPLE_SCHEMA
from gsmv.score import SCORE_SCHEMA


def overrides(out: Path, problems: int) -> list[str]:
    return [f"out_dir={out}", "name=scale", "data.source=synth", "data.synth.train_size=100",
            f"data.synth.test_size={problems}", "data.val_size=10", "report.html_problems=300", "threads=2"]


def build(cfg, n: int, per_shard: int, seed: int = 0, tokens: int = 8) -> None:
    rng = np.random.default_rng(seed)
    paths = RunPaths(cfg.run_dir)
    problems = load_split(cfg, "test")
    toks, forced = list(range(1, tokens + 1)), [False] * tokens
    body = "She has 3 + 4 = <<3+4=7>>7 apples.\n" * max(0, (3 * tokens - 20) // 36)
    for split, count in (("test", n), ("test_greedy", 1)):
        for k in range(0, len(problems), per_shard):
            chunk = problems[k:k + per_shard]
            rows, scores = {c: [] for c in SAMPLE_SCHEMA.names}, {c: [] for c in SCORE_SCHEMA.names}
            for p in chunk:
                rate = rng.uniform(0.0, 0.6)
                ok = rng.random(count) < rate
                wrong = [str(int(p.answer) + d) if p.answer.lstrip("-").isdigit() else "0" for d in (1, 2, 3)]
                for j in range(count):
                    ans = p.answer if ok[j] else wrong[j % 3]
                    # About 3 characters a token, as in real samples: lines of steps before the answer.
                    text = body + f"So it is {ans}.\n#### {ans}"
                    for c, v in (("problem_id", p.id), ("sample_idx", j), ("text", text), ("tokens", toks),
                                 ("n_tokens", tokens), ("final_answer", ans), ("is_correct", bool(ok[j])),
                                 ("calc_calls", 0), ("forced", forced), ("finished", True)):
                        rows[c].append(v)
                    if split == "test":
                        for c, v in (("problem_id", p.id), ("sample_idx", j),
                                     ("score", float(rng.random() * 0.8 + 0.2 * ok[j])), ("token_values", [])):
                            scores[c].append(v)
            i = k // per_shard
            write_parquet(shard_path(paths.samples(split), i), pa.table(rows, schema=SAMPLE_SCHEMA))
            if split == "test":
                write_parquet(shard_path(paths.scores("test"), i), pa.table(scores, schema=SCORE_SCHEMA))


def timed_child(code: str) -> tuple[float, float]:
    """(seconds, peak RSS in GiB) of `python -c code`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux; the max over children so far
    return secs, max(peak, before) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=1319)
    ap.add_argument("--samples", type=int, default=3200)
    ap.add_argument("--per-shard", type=int, default=16, help="problems per shard")
    ap.add_argument("--tokens", type=int, default=8,
                    help="tokens per solution (8: the short default; real synth samples average about 70)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        ov = overrides(out, a.problems)
        cfg = load_config("synth", ov)
        t0 = time.perf_counter()
        build(cfg, a.samples, a.per_shard, tokens=a.tokens)
        print(f"# built {a.problems} x {a.samples} samples of {a.tokens} tokens in {time.perf_counter() - t0:.0f} s")
        setup = f"from gsmv.config import load_config; cfg = load_config('synth', {ov!r}); "
        ev = timed_child(setup + "from gsmv import evaluate; evaluate.main(cfg)")
        rep = timed_child(setup + "from gsmv import report; report.main(cfg)")
        res = json.loads(RunPaths(cfg.run_dir).results.read_text())
    print("| step | problems | samples each | seconds | peak RSS (GiB) |")
    print("|---|---:|---:|---:|---:|")
    print(f"| gsmv evaluate | {a.problems} | {a.samples} | {ev[0]:.1f} | {ev[1]:.2f} |")
    print(f"| gsmv report | {a.problems} | {a.samples} | {rep[0]:.1f} | {rep[1]:.2f} (max of both) |")
    print(f"# best-of-{a.samples} {res['metrics']['best_of_n']['value']:.3f}, "
          f"majority {res['metrics']['majority_vote']['value']:.3f}")


if __name__ == "__main__":
    main()
