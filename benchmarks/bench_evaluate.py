"""Evaluation speed at the paper's scale: 1319 test problems x 100 samples, 1000 bootstrap resamples.

    python benchmarks/bench_evaluate.py
    python benchmarks/bench_evaluate.py --problems 1319 --samples 100 --bootstrap 1000 --repeat 3

Times gsmv.evaluate.compute (every metric and curve, with paired bootstrap CIs) on synthetic
correctness / answers / scores, and each estimator alone. Reading Parquet shards and rendering the
report are not included (they depend on the run folder and the tokenizer).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import pyarrow as pa

from gsmv import evaluate as E
from gsmv.run_data import EvalData


def synthetic(P: int, n: int, seed: int = 0) -> EvalData:
    rng = np.random.default_rng(seed)
    correct = rng.random((P, n)) < rng.random((P, 1))
    scores = 0.7 * rng.random((P, n)) + 0.3 * correct
    wrong = rng.integers(0, 6, size=(P, n))
    answers = [[("ok" if correct[p, j] else str(wrong[p, j])) if rng.random() > 0.05 or correct[p, j] else None
                for j in range(n)] for p in range(P)]
    return EvalData(problems=[], n=n, correct=correct, answers=answers, scores=scores,
                    greedy_correct=correct[:, 0], samples=pa.table({"x": [0]}), sample_rows=np.zeros((P, n), int),
                    score_table=None, score_rows=None, greedy=None, greedy_rows=None)


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=1319)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    data = synthetic(a.problems, a.samples)
    P, n = data.correct.shape
    grid, ks = E.power_grid(n), E.k_grid(n)
    codes, code_correct = E.encode_answers(data.answers, data.correct)
    values = np.random.default_rng(0).random((len(grid) * 3 + len(ks) + 1, P))
    rows = [
        ("pass@k (grid)", lambda: [E.pass_at_k(n, data.correct.sum(1), k) for k in grid]),
        ("best-of-N exact (grid)", lambda: E.best_of_n(data.scores, data.correct, grid)),
        ("majority@N exact (grid)", lambda: E.majority_vote_at(codes, code_correct, grid)),
        ("top-k voting (grid)", lambda: E.top_k_voting(data.scores, data.answers, data.correct, ks)),
        (f"bootstrap CIs ({values.shape[0]} rows x {a.bootstrap})", lambda: E.bootstrap_ci(values, a.bootstrap, 0)),
        ("compute(): everything", lambda: E.compute(data, bootstrap=a.bootstrap)),
    ]
    print(f"# gsmv evaluate benchmark: {P} problems x {n} samples, bootstrap {a.bootstrap}, "
          f"{platform.processor() or platform.machine()}, numpy {np.__version__}")
    head = f"seconds (best of {a.repeat})"
    print(f"| {'step':<40} | {head} |")
    print(f"|{'-' * 42}|{'-' * (len(head) + 2)}|")
    for name, fn in rows:
        print(f"| {name:<40} | {best(fn, a.repeat):>{len(head)}.3f} |")


if __name__ == "__main__":
    main()
