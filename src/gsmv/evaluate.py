"""Evaluate a run's test samples: test@1, pass@k, majority vote, verifier best-of-N, top-k voting.

Inputs (run folder): samples/test (n samples per problem at T>0), scores/test (the
verifier's value per sample) and, when present, samples/test_greedy (one T=0 sample per
problem, for test@1). Every metric is a mean over test problems of a per-problem value in
[0, 1]; its 95% confidence interval is a percentile bootstrap over problems (the same
resampled problem sets for every metric, so differences between methods are paired).

Definitions (the paper's, with the choices it leaves open made explicit):

- test@1: the greedy sample is correct. Absent (null) when there are no greedy samples.
- pass@k: the unbiased estimator of Chen et al. 2021, 1 - C(n-c, k) / C(n, k) for c correct
  of n, computed as a product (no huge binomials). pass@n is the oracle ("coverage").
- majority vote: the most frequent final answer among the samples; samples without a final
  answer do not vote; a problem where none has an answer counts as wrong. Ties go to the
  answer that first appears earliest in sample order (sample_idx), which is arbitrary but
  deterministic and independent of correctness. Majority@N for N < n is averaged over
  cfg.evaluate.subsets random N-subsets per problem (seeded).
- verifier best-of-N: the sample with the highest verifier score among N is graded. For N < n
  this is the exact expectation over all N-subsets of the n samples (what averaging over random
  subsets estimates, without its noise): the sample ranked j-th of n is the subset's best with
  probability C(n-1-j, N-1) / C(n, N). Samples with equal scores split that chance evenly (a
  random tie-break), so a constant verifier scores exactly the mean sample accuracy and a
  perfect one exactly pass@N.
- top-k voting (paper Fig. 7b): the k highest-scored samples of all n vote (majority vote as
  above); ties go to the answer held by the higher-ranked sample. Score ties in the ranking
  are broken by sample_idx.
- verifier AUC: ROC AUC of score vs correctness over all test samples (pooled), and the mean
  of per-problem AUCs over problems with both correct and wrong samples (the ranking the
  verifier is used for). Diagnostics: no confidence interval.

results.json (schema_version 1; every accuracy is a fraction in [0, 1] rounded to 1e-6; tables print percent):

    {"kind": "run", "schema_version": 1, "run": str, "split": "test",
     "n_problems": int, "n_samples": int,
     "units": "fraction",
     "bootstrap": {"resamples": int, "seed": int, "level": 0.95, "method": str},
     "majority_subsets": int,
     "metrics": {name: {"value": float, "ci_low": float|null, "ci_high": float|null} | null, ...}
        names: "test@1" (null without greedy samples), "pass@1", "majority_vote", "best_of_n" (N = n),
               "oracle" (pass@n), "verifier_auc", "verifier_auc_within" (null when undefined)
     "curves": {name: {"x": [int], "value": [float], "ci_low": [float|null], "ci_high": [float|null]}}
        names: "pass_at_k" (x = k), "best_of_n" (x = N), "majority_vote" (x = N), "top_k_voting" (x = k)
     "diagnostics": {"answered": fraction of samples with a final answer, "finished": fraction that
                     stopped at EOS (null if unknown), "mean_tokens": float|null,
                     "greedy_answered": float|null}}

evaluate_reference(path) returns {"kind": "reference", "source", "n_problems", "units", "bootstrap",
"models": {model_key: metric}} for the paper's released example_model_solutions.jsonl.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gsmv.artifacts import RunPaths, atomic_write_json, iter_jsonl, list_shards
from gsmv.config import RunConfig
from gsmv.errors import GsmvError

SCHEMA_VERSION = 1
LEVEL = 0.95
REFERENCE_MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")
REFERENCE_LABELS = {
    "6b_finetuning": "paper 6B finetuning (test@1)",
    "6b_verification": "paper 6B verification (best-of-100)",
    "175b_finetuning": "paper 175B finetuning (test@1)",
    "175b_verification": "paper 175B verification (best-of-100)",
}
METRIC_LABELS = {
    "test@1": "test@1 (greedy)",
    "pass@1": "pass@1 (one sample)",
    "majority_vote": "majority vote",
    "best_of_n": "verifier best-of-N",
    "oracle": "coverage (oracle pass@N)",
    "verifier_auc": "verifier AUC (pooled)",
    "verifier_auc_within": "verifier AUC (within problem)",
}
# Diagnostics that are not accuracies: printed as 0.xxx, not percent.
NOT_PERCENT = ("verifier_auc", "verifier_auc_within")


# --------------------------------------------------------------------------- estimators


def power_grid(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    out, k = [], 1
    while k < n:
        out.append(k)
        k *= 2
    return out + [n] if n >= 1 else []


def k_grid(n: int) -> list[int]:
    """1, 2, 3, 5, 10, 20, 30, 50, 100, ... up to n, and n itself (top-k voting's x axis)."""
    out: set[int] = set()
    scale = 1
    while scale <= n:
        out.update(m * scale for m in (1, 2, 3, 5) if m * scale <= n)
        scale *= 10
    if n >= 1:
        out.add(n)
    return sorted(out)


def pass_at_k(n: int, c: np.ndarray, k: int) -> np.ndarray:
    """Per-problem unbiased pass@k: 1 - C(n-c, k)/C(n, k) = 1 - prod_{i=n-c+1..n} (1 - k/i)."""
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be in [1, n={n}]")
    c = np.asarray(c, dtype=np.int64)
    out = np.ones(c.shape, dtype=np.float64)
    for cv in np.unique(c):
        if n - cv >= k:  # otherwise every k-subset holds a correct sample
            out[c == cv] = 1.0 - np.prod(1.0 - k / np.arange(n - cv + 1, n + 1, dtype=np.float64))
    return out


def best_of_n(scores: np.ndarray, correct: np.ndarray, ns: Sequence[int]) -> np.ndarray:
    """[len(ns), P]: expected correctness of the top-scored sample of a uniform random N-subset.

    See the module docstring; exact, no sampling. scores, correct: [P, n].
    """
    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    P, n = scores.shape
    order = np.argsort(-scores, axis=1, kind="stable")
    s = np.take_along_axis(scores, order, axis=1)
    c = np.take_along_axis(correct, order, axis=1)
    # Equal scores form a group; each member gets the group's mean correctness (random tie-break).
    new = np.ones((P, n), dtype=bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    gid = np.cumsum(new, axis=1) - 1 + (np.arange(P) * n)[:, None]
    sums = np.bincount(gid.ravel(), weights=c.ravel(), minlength=P * n)
    cnts = np.bincount(gid.ravel(), minlength=P * n)
    c_eff = (sums / np.maximum(cnts, 1))[gid]
    out = np.empty((len(ns), P))
    for r, N in enumerate(ns):
        if not 1 <= N <= n:
            raise ValueError(f"N={N} must be in [1, n={n}]")
        total = math.comb(n, N)
        w = np.array([math.comb(n - 1 - j, N - 1) / total for j in range(n)])
        out[r] = c_eff @ w
    return out


def encode_answers(answers: Sequence[Sequence[str | None]], correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Answers → integer codes per row, numbered by first appearance (None → -1); and code → correct.

    Returns codes [P, n] and code_correct [P, U] (U = the most distinct answers of any row).
    """
    P = len(answers)
    n = len(answers[0]) if P else 0
    codes = np.full((P, n), -1, dtype=np.int64)
    rows: list[list[bool]] = []
    for p, row in enumerate(answers):
        seen: dict[str, int] = {}
        ok: list[bool] = []
        for j, a in enumerate(row):
            if a is None:
                continue
            if a not in seen:
                seen[a] = len(seen)
                ok.append(bool(correct[p, j]))
            codes[p, j] = seen[a]
        rows.append(ok)
    U = max((len(r) for r in rows), default=0)
    code_correct = np.zeros((P, max(U, 1)), dtype=bool)
    for p, ok in enumerate(rows):
        code_correct[p, : len(ok)] = ok
    return codes, code_correct


def vote(codes: np.ndarray, n_codes: int) -> np.ndarray:
    """Winner code per row (-1 when nobody voted); ties go to the smallest code (earliest first appearance)."""
    rows = codes.shape[0]
    valid = codes >= 0
    flat = (np.arange(rows)[:, None] * n_codes + codes)[valid]
    counts = np.bincount(flat, minlength=rows * n_codes).reshape(rows, n_codes)
    win = counts.argmax(axis=1)
    win[counts.max(axis=1) == 0] = -1
    return win


def _winner_correct(win: np.ndarray, code_correct: np.ndarray, rows_problem: np.ndarray) -> np.ndarray:
    ok = code_correct[rows_problem, np.maximum(win, 0)]
    return ok & (win >= 0)


def majority_vote(codes: np.ndarray, code_correct: np.ndarray) -> np.ndarray:
    """[P]: 1.0 when the most frequent answer of all n samples is correct."""
    P = codes.shape[0]
    win = vote(codes, code_correct.shape[1])
    return _winner_correct(win, code_correct, np.arange(P)).astype(np.float64)


def majority_vote_at(codes: np.ndarray, code_correct: np.ndarray, ns: Sequence[int], subsets: int,
                     rng: np.random.Generator) -> np.ndarray:
    """[len(ns), P]: majority vote among N samples, averaged over `subsets` random N-subsets per problem."""
    P, n = codes.shape
    U = code_correct.shape[1]
    out = np.empty((len(ns), P))
    # Problems per block so that the random keys stay around 4M numbers.
    block = max(1, 4_000_000 // max(1, subsets * n))
    for r, N in enumerate(ns):
        if N == n:
            out[r] = majority_vote(codes, code_correct)
            continue
        for lo in range(0, P, block):
            hi = min(P, lo + block)
            keys = rng.random((hi - lo, subsets, n))
            idx = np.argsort(keys, axis=2)[:, :, :N]
            sub = np.take_along_axis(np.broadcast_to(codes[lo:hi, None, :], keys.shape), idx, axis=2)
            win = vote(sub.reshape(-1, N), U)
            rows_problem = np.repeat(np.arange(lo, hi), subsets)
            ok = _winner_correct(win, code_correct, rows_problem).reshape(hi - lo, subsets)
            out[r, lo:hi] = ok.mean(axis=1)
    return out


def top_k_voting(scores: np.ndarray, answers: Sequence[Sequence[str | None]], correct: np.ndarray,
                 ks: Sequence[int]) -> np.ndarray:
    """[len(ks), P]: the k top-scored samples vote; ties go to the answer of the higher-ranked sample."""
    scores = np.asarray(scores, dtype=np.float64)
    P, n = scores.shape
    order = np.argsort(-scores, axis=1, kind="stable")
    ranked_answers = [[answers[p][j] for j in order[p]] for p in range(P)]
    ranked_correct = np.take_along_axis(np.asarray(correct, dtype=bool), order, axis=1)
    # Coded in rank order, the smallest code among tied answers is the one ranked highest.
    codes, code_correct = encode_answers(ranked_answers, ranked_correct)
    out = np.empty((len(ks), P))
    for r, k in enumerate(ks):
        if not 1 <= k <= n:
            raise ValueError(f"k={k} must be in [1, n={n}]")
        out[r] = majority_vote(np.ascontiguousarray(codes[:, :k]), code_correct)
    return out


def _midranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    _, inv, counts = np.unique(x[order], return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts
    ranks = np.empty(len(x))
    ranks[order] = (starts + (counts + 1) / 2.0)[inv]
    return ranks


def auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC AUC (Mann-Whitney, ties count half); None without both classes."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=bool).ravel()
    pos = int(labels.sum())
    neg = labels.size - pos
    if pos == 0 or neg == 0:
        return None
    r = _midranks(scores)
    return float((r[labels].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def auc_within(scores: np.ndarray, correct: np.ndarray) -> float | None:
    """Mean per-problem AUC over problems with both correct and wrong samples."""
    vals = [a for s, c in zip(scores, correct, strict=True) if (a := auc(s, c)) is not None]
    return float(np.mean(vals)) if vals else None


def bootstrap_ci(values: np.ndarray, resamples: int, seed: int, level: float = LEVEL
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Percentile CIs of the mean over problems for each row of values [M, P], paired across rows.

    The resampled problem sets are drawn once and applied to every metric through a count
    matrix, so M metrics × B resamples cost one [B, P] @ [P, M] product.
    """
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    M, P = values.shape
    if resamples <= 0 or P == 0:
        nan = np.full(M, np.nan)
        return nan, nan.copy()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, P, size=(resamples, P))
    counts = np.bincount((idx + (np.arange(resamples) * P)[:, None]).ravel(), minlength=resamples * P)
    means = counts.reshape(resamples, P).astype(np.float64) @ values.T / P  # [B, M]
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha], axis=0)
    return lo, hi


def _metric(value: float, lo: float, hi: float) -> dict:
    def f(x: float) -> float | None:
        return None if x is None or not np.isfinite(x) else round(float(x), 6)

    return {"value": f(value), "ci_low": f(lo), "ci_high": f(hi)}


def _diag(value: float | None) -> dict | None:
    return None if value is None else {"value": round(float(value), 6), "ci_low": None, "ci_high": None}


# --------------------------------------------------------------------------- loading a run


@dataclass
class EvalData:
    """One run's test samples aligned into [P, n] arrays (problems in split order, sample_idx order)."""

    problems: list  # list[gsmv.data.gsm8k.Problem]
    n: int
    correct: np.ndarray  # bool [P, n]
    answers: list[list[str | None]]  # normalized final answers [P][n]
    scores: np.ndarray | None  # float [P, n]
    greedy_correct: np.ndarray | None  # bool [P]
    # The tables as read (shard order, the columns asked for) and where each [p, j] sits in them: consumers
    # take only the rows they need (reordering list columns of every row is slow).
    samples: pa.Table
    sample_rows: np.ndarray  # int [P, n]
    score_table: pa.Table | None
    score_rows: np.ndarray | None  # int [P, n]
    greedy: pa.Table | None
    greedy_rows: np.ndarray | None  # int [P]


def _read_folder(folder: Path, required: Sequence[str], optional: Sequence[str] = ()) -> tuple[pa.Table, np.ndarray,
                                                                                            list[Path]]:
    """All shards of a folder with `required` (+ whichever `optional` exist) columns; and each row's shard."""
    shards = list_shards(folder)
    if not shards:
        raise GsmvError(f"{folder}: no shard-*.parquet files (has this stage run?)")
    tables, which = [], []
    for i, p in enumerate(shards):
        try:
            names = pq.read_schema(p).names
            missing = [c for c in required if c not in names]
            if missing:
                raise GsmvError(f"{p}: missing column(s) {', '.join(missing)}")
            t = pq.read_table(p, columns=[*required, *[c for c in optional if c in names]])
        except GsmvError:
            raise
        except Exception as e:  # noqa: BLE001 - pyarrow raises many types for a bad file
            raise GsmvError(f"{p}: unreadable Parquet shard ({str(e).splitlines()[0]})") from None
        tables.append(t)
        which.append(np.full(t.num_rows, i, dtype=np.int64))
    table = pa.concat_tables(tables, promote_options="default")
    return table, np.concatenate(which), shards


def _positions(table: pa.Table, shard_of: np.ndarray, shards: list[Path], folder: Path, index: dict[str, int],
               n: int | None, what: str) -> tuple[np.ndarray, int]:
    """Row → p*n + sample_idx, validating ids, sample indices, duplicates and per-problem counts."""
    if table.num_rows == 0:
        raise GsmvError(f"{folder}: the shards hold no rows")
    pids = table.column("problem_id").to_pylist()
    sidx = np.asarray(table.column("sample_idx").fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
    p_of = np.empty(len(pids), dtype=np.int64)
    for r, pid in enumerate(pids):
        p = index.get(pid)  # type: ignore[arg-type]
        if p is None:
            raise GsmvError(f"{shards[shard_of[r]]}: problem_id '{pid}' is not in the test split "
                            f"({len(index)} problems; was it sampled with another data.dir or data.test_limit?)")
        p_of[r] = p
    P = len(index)
    per = np.bincount(p_of, minlength=P)
    if n is None:
        n = int(per.max()) if P else 0
    if (sidx < 0).any() or (sidx >= max(n, 1)).any():
        r = int(np.flatnonzero((sidx < 0) | (sidx >= n))[0])
        raise GsmvError(f"{shards[shard_of[r]]}: problem {pids[r]} has sample_idx {sidx[r]}, outside 0..{n - 1}")
    pos = p_of * n + sidx
    uniq, first, cnt = np.unique(pos, return_index=True, return_counts=True)
    if (cnt > 1).any():
        r = int(first[np.flatnonzero(cnt > 1)[0]])
        raise GsmvError(f"{folder}: problem {pids[r]} sample {sidx[r]} appears more than once")
    bad = np.flatnonzero(per != n)
    if bad.size:
        pid = next(k for k, v in index.items() if v == bad[0])
        raise GsmvError(f"{folder}: problem {pid} has {per[bad[0]]} {what}, expected {n} like the others "
                        f"({bad.size} of {P} problems differ)")
    return pos, n


def load_run(cfg: RunConfig, sample_columns: Sequence[str] = (), score_columns: Sequence[str] = (),
             greedy_columns: Sequence[str] = (), need_scores: bool = True) -> EvalData:
    """Read and cross-check samples/test, scores/test and samples/test_greedy of cfg's run folder."""
    from gsmv.data.answers import normalize_answer
    from gsmv.data.tasks import load_split

    paths = RunPaths(cfg.run_dir)
    problems = load_split(cfg, "test")
    index = {p.id: i for i, p in enumerate(problems)}
    P = len(problems)
    if P == 0:
        raise GsmvError(f"{cfg.run_dir}: the test split is empty")

    folder = paths.samples("test")
    base = ["problem_id", "sample_idx", "final_answer", "is_correct"]
    samples, shard_of, shards = _read_folder(
        folder, base, [c for c in ("finished", "n_tokens", *sample_columns) if c not in base])
    pos, n = _positions(samples, shard_of, shards, folder, index, None, "samples")
    order = np.argsort(pos)

    raw = samples.column("final_answer").to_pylist()
    flat_answers = [normalize_answer(raw[r]) if raw[r] is not None else None for r in order]
    ok_raw = samples.column("is_correct").to_pylist()
    ok = [ok_raw[r] for r in order]
    if any(v is None for v in ok):
        # Ungraded rows are graded here against the reference, like the label stage does.
        ok = [v if v is not None else (a is not None and a == problems[i // n].answer)
              for i, (v, a) in enumerate(zip(ok, flat_answers, strict=True))]
    correct = np.asarray(ok, dtype=bool).reshape(P, n)
    answers = [flat_answers[p * n:(p + 1) * n] for p in range(P)]

    scores = score_table = score_rows = None
    sfolder = paths.scores("test")
    if need_scores or list_shards(sfolder):
        if not list_shards(sfolder):
            raise GsmvError(f"{sfolder}: no shard-*.parquet files (run `gsmv score` first)")
        score_table, s_shard_of, s_shards = _read_folder(sfolder, ["problem_id", "sample_idx", "score"],
                                                         list(score_columns))
        if score_table.num_rows != samples.num_rows:
            raise GsmvError(f"{sfolder}: {score_table.num_rows} scores for {samples.num_rows} samples in {folder} "
                            "(rerun `gsmv score`)")
        spos, _ = _positions(score_table, s_shard_of, s_shards, sfolder, index, n, "scores")
        score_rows = np.argsort(spos).reshape(P, n)
        scores = np.asarray(score_table.column("score").fill_null(np.nan).to_numpy(zero_copy_only=False),
                            dtype=np.float64)[score_rows]
        if not np.isfinite(scores).all():
            bad = int(np.flatnonzero(~np.isfinite(scores.ravel()))[0])
            raise GsmvError(f"{sfolder}: score of problem {problems[bad // n].id} sample {bad % n} is "
                            f"{scores.ravel()[bad]} (not a finite number)")

    greedy = greedy_correct = greedy_rows = None
    gfolder = paths.samples("test_greedy")
    if list_shards(gfolder):
        greedy, g_shard_of, g_shards = _read_folder(gfolder, ["problem_id", "sample_idx", "final_answer",
                                                              "is_correct"], list(greedy_columns))
        gpos, _ = _positions(greedy, g_shard_of, g_shards, gfolder, index, 1, "greedy samples")
        greedy_rows = np.argsort(gpos)
        g_raw = greedy.column("final_answer").to_pylist()
        g_ans = [normalize_answer(g_raw[r]) if g_raw[r] is not None else None for r in greedy_rows]
        g_okr = greedy.column("is_correct").to_pylist()
        g_ok = [v if v is not None else (a is not None and a == problems[i].answer)
                for i, (v, a) in enumerate(zip([g_okr[r] for r in greedy_rows], g_ans, strict=True))]
        greedy_correct = np.asarray(g_ok, dtype=bool)

    return EvalData(problems=problems, n=n, correct=correct, answers=answers, scores=scores,
                    greedy_correct=greedy_correct, samples=samples, sample_rows=order.reshape(P, n),
                    score_table=score_table, score_rows=score_rows, greedy=greedy, greedy_rows=greedy_rows)


# --------------------------------------------------------------------------- computing results


def compute(data: EvalData, *, bootstrap: int = 1000, subsets: int = 32, seed: int = 0) -> dict:
    """All metrics and curves of one run (see the module docstring for the schema)."""
    from gsmv.data.answers import normalize_answer

    P, n = data.correct.shape
    c = data.correct.sum(axis=1)
    rows: list[np.ndarray] = []  # per-problem values, one row per (metric or curve point)
    names: list[tuple[str, Any]] = []

    def add(name: tuple[str, Any], v: np.ndarray) -> None:
        names.append(name)
        rows.append(np.asarray(v, dtype=np.float64))

    if data.greedy_correct is not None:
        add(("metric", "test@1"), data.greedy_correct)
    grid = power_grid(n)
    for k in grid:
        add(("pass_at_k", k), pass_at_k(n, c, k))
    codes, code_correct = encode_answers(data.answers, data.correct)
    rng = np.random.default_rng(seed)
    for N, v in zip(grid, majority_vote_at(codes, code_correct, grid, max(1, subsets), rng), strict=True):
        add(("majority_vote", N), v)
    if data.scores is not None:
        for N, v in zip(grid, best_of_n(data.scores, data.correct, grid), strict=True):
            add(("best_of_n", N), v)
        ks = k_grid(n)
        for k, v in zip(ks, top_k_voting(data.scores, data.answers, data.correct, ks), strict=True):
            add(("top_k_voting", k), v)

    values = np.stack(rows)
    point = values.mean(axis=1)
    lo, hi = bootstrap_ci(values, bootstrap, seed)
    stats = {name: _metric(point[i], lo[i], hi[i]) for i, name in enumerate(names)}

    curves: dict[str, dict] = {}
    for (kind, x), m in stats.items():
        if kind == "metric":
            continue
        cur = curves.setdefault(kind, {"x": [], "value": [], "ci_low": [], "ci_high": []})
        cur["x"].append(int(x))
        for key in ("value", "ci_low", "ci_high"):
            cur[key].append(m[key])

    metrics: dict[str, dict | None] = {
        "test@1": stats.get(("metric", "test@1")),
        "pass@1": stats[("pass_at_k", 1)],
        "majority_vote": stats[("majority_vote", n)],
        "best_of_n": stats.get(("best_of_n", n)),
        "oracle": stats[("pass_at_k", n)],
        "verifier_auc": _diag(auc(data.scores, data.correct)) if data.scores is not None else None,
        "verifier_auc_within": _diag(auc_within(data.scores, data.correct)) if data.scores is not None else None,
    }

    def frac(col: str) -> float | None:
        if col not in data.samples.column_names:
            return None
        vals = data.samples.column(col).to_pylist()
        known = [v for v in vals if v is not None]
        return round(float(np.mean(known)), 6) if known else None

    answered = float(np.mean([a is not None for row in data.answers for a in row]))
    greedy_answered = None
    if data.greedy is not None:
        g = data.greedy.column("final_answer").to_pylist()
        greedy_answered = round(float(np.mean([normalize_answer(a) is not None for a in g])), 6)
    return {
        "kind": "run",
        "schema_version": SCHEMA_VERSION,
        "split": "test",
        "n_problems": P,
        "n_samples": n,
        "units": "fraction",
        "bootstrap": {"resamples": int(bootstrap), "seed": int(seed), "level": LEVEL,
                      "method": "percentile; problems resampled with replacement; paired across metrics"},
        "majority_subsets": int(max(1, subsets)),
        "metrics": metrics,
        "curves": curves,
        "diagnostics": {"answered": round(answered, 6), "finished": frac("finished"),
                        "mean_tokens": frac("n_tokens"), "greedy_answered": greedy_answered},
    }


def main(cfg: RunConfig) -> dict:
    """Evaluate cfg's run folder; write run_dir/results.json (main process only); return the results."""
    from accelerate import PartialState

    data = load_run(cfg)
    results = {"run": cfg.name, **compute(data, bootstrap=cfg.evaluate.bootstrap, subsets=cfg.evaluate.subsets,
                                          seed=cfg.evaluate.seed)}
    if PartialState().is_main_process:
        atomic_write_json(RunPaths(cfg.run_dir).results, results)
    return results


# --------------------------------------------------------------------------- the paper's reference results


def _read_reference(path: Path) -> dict[str, np.ndarray]:
    flags: dict[str, list[bool]] = {m: [] for m in REFERENCE_MODELS}
    for _, where, rec in iter_jsonl(path):
        if not isinstance(rec, dict):
            raise GsmvError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        for key in ("question", "ground_truth", *REFERENCE_MODELS):
            if key not in rec:
                raise GsmvError(f"{where}: missing key '{key}'")
        for m in REFERENCE_MODELS:
            entry = rec[m]
            if not isinstance(entry, dict) or "is_correct" not in entry:
                raise GsmvError(f"{where}: key '{m}' must be an object with 'is_correct' and 'solution'")
            if not isinstance(entry["is_correct"], bool):
                raise GsmvError(f"{where}: '{m}.is_correct' must be true or false, got {entry['is_correct']!r}")
            flags[m].append(entry["is_correct"])
    if not flags[REFERENCE_MODELS[0]]:
        raise GsmvError(f"{path}: no records")
    return {m: np.asarray(v, dtype=np.float64) for m, v in flags.items()}


def evaluate_reference(path: str | Path, bootstrap: int = 1000, seed: int = 0) -> dict:
    """Accuracy with a 95% bootstrap CI for each model of the paper's example_model_solutions.jsonl."""
    path = Path(path)
    flags = _read_reference(path)
    values = np.stack([flags[m] for m in REFERENCE_MODELS])
    lo, hi = bootstrap_ci(values, bootstrap, seed)
    return {
        "kind": "reference",
        "source": str(path),
        "n_problems": int(values.shape[1]),
        "units": "fraction",
        "bootstrap": {"resamples": int(bootstrap), "seed": int(seed), "level": LEVEL,
                      "method": "percentile; problems resampled with replacement; paired across metrics"},
        "models": {m: _metric(values[i].mean(), lo[i], hi[i]) for i, m in enumerate(REFERENCE_MODELS)},
    }


# --------------------------------------------------------------------------- tables


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100.0 * x:.1f}"


def fmt_metric(name: str, m: dict | None) -> tuple[str, str]:
    """(value, CI) as printed: percent with one decimal for accuracies, 0.xxx for AUCs."""
    if m is None or m.get("value") is None:
        return "absent", ""
    if name in NOT_PERCENT:
        return f"{m['value']:.3f}", ""
    ci = "" if m.get("ci_low") is None else f"[{pct(m['ci_low'])}, {pct(m['ci_high'])}]"
    return f"{pct(m['value'])}%", ci


def format_table(results: dict) -> str:
    """A compact text table of a results.json (or of evaluate_reference's dict)."""
    lines: list[str] = []
    if results.get("kind") == "reference":
        lines.append(f"paper reference: {results['source']} ({results['n_problems']} problems, 95% bootstrap CI)")
        for m, metric in results["models"].items():
            v, ci = fmt_metric(m, metric)
            lines.append(f"  {REFERENCE_LABELS.get(m, m):<40} {v:>7}  {ci}")
        return "\n".join(lines)
    n = results["n_samples"]
    lines.append(f"{results.get('run', 'run')}: {results['split']}, {results['n_problems']} problems x {n} samples "
                 f"(95% bootstrap CI, {results['bootstrap']['resamples']} resamples)")
    for name, metric in results["metrics"].items():
        label = METRIC_LABELS.get(name, name)
        if name in ("best_of_n", "oracle"):
            label = label.replace("@N", f"@{n}").replace("-N", f"-{n}")
        elif name == "majority_vote":
            label = f"{label} ({n})"
        v, ci = fmt_metric(name, metric)
        lines.append(f"  {label:<32} {v:>7}  {ci}")
    for key, title in (("best_of_n", "best-of-N"), ("majority_vote", "majority@N"), ("pass_at_k", "pass@k"),
                       ("top_k_voting", "top-k voting")):
        cur = results["curves"].get(key)
        if cur:
            pts = "  ".join(f"{x}:{pct(v)}" for x, v in zip(cur["x"], cur["value"], strict=True))
            lines.append(f"  {title:<13} {pts}")
    return "\n".join(lines)
