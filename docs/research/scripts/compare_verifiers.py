"""Two runs' verifiers on the same test samples, paired: best-of-N and within-problem AUC with a paired CI.

    python docs/research/scripts/compare_verifiers.py runs/synth runs/synth-smol

Takes the test samples both runs scored (the same problem and sample index: synth samples are seeded per
problem and index, so a run with fewer samples per problem holds the first of the other's; a few may differ where
batched float arithmetic breaks a near-tie differently, counted here, and more than 1% is an error), and reports for each verifier the exact best-of-N at N = the shared samples per
problem (gsmv.metrics.best_of_n), majority vote over them, and the within-problem AUC; then the difference of
best-of-N (second − first) with a 95% bootstrap CI over problems, resampling the same problems for both.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from gsmv.artifacts import RunPaths, read_shards
from gsmv.metrics import auc_within, best_of_n, bootstrap_ci, encode_answers, majority_vote


def load(run: str) -> dict[tuple[int, int], tuple[float, bool, str | None]]:
    paths = RunPaths(run)
    samples = read_shards(paths.samples("test"), ["problem_id", "sample_idx", "is_correct", "final_answer"]).table.to_pylist()
    scores = read_shards(paths.scores("test"), ["problem_id", "sample_idx", "score"]).table.to_pylist()
    sc = {(r["problem_id"], r["sample_idx"]): r["score"] for r in scores}
    return {(r["problem_id"], r["sample_idx"]): (sc[(r["problem_id"], r["sample_idx"])], bool(r["is_correct"]),
                                                 r["final_answer"]) for r in samples}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first")
    ap.add_argument("second")
    ap.add_argument("--resamples", type=int, default=1000)
    a = ap.parse_args(argv)
    runs = [load(a.first), load(a.second)]
    keys = sorted(set(runs[0]) & set(runs[1]))
    differ = sum(runs[0][k][1:] != runs[1][k][1:] for k in keys)
    if differ > len(keys) // 100:
        print(f"{differ} of {len(keys)} shared samples differ (answer or label): not the same samples", file=sys.stderr)
        return 1
    problems = sorted({p for p, _ in keys})
    by = {p: [k for k in keys if k[0] == p] for p in problems}
    n = min(len(v) for v in by.values())
    C = np.array([[runs[0][k][1] for k in by[p][:n]] for p in problems])
    answers = [[runs[0][k][2] for k in by[p][:n]] for p in problems]
    codes, code_correct = encode_answers(answers, C)
    maj = majority_vote(codes, code_correct)
    print(f"{len(problems)} problems x {n} shared samples ({differ} differ: each verifier is graded on its own run's);"
          f" majority@{n} of the first {100 * maj.mean():.1f}")
    per = []
    for run, name in zip(runs, (a.first, a.second), strict=True):
        S = np.array([[run[k][0] for k in by[p][:n]] for p in problems])
        C = np.array([[run[k][1] for k in by[p][:n]] for p in problems])
        b = best_of_n(S, C, [n])[0]
        lo, hi = bootstrap_ci(b[None, :], a.resamples, seed=0)
        print(f"{name}: best-of-{n} {100 * b.mean():.1f} [{100 * lo[0]:.1f}, {100 * hi[0]:.1f}], "
              f"within-AUC {auc_within(list(S), list(C)):.3f}")
        per.append(b)
    d = per[1] - per[0]
    lo, hi = bootstrap_ci(d[None, :], a.resamples, seed=0)
    print(f"difference (second - first): {100 * d.mean():+.1f} [{100 * lo[0]:+.1f}, {100 * hi[0]:+.1f}] points")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
