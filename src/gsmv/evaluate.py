"""Evaluate a run's test samples: test@1, pass@k, majority vote, verifier best-of-N, top-k voting.

Inputs (run folder): samples/test (n samples per problem at T>0), scores/test (the
verifier's value per sample) and, when present, samples/test_greedy (one T=0 sample per
problem, for test@1). Every metric is a mean over test problems of a per-problem value in
[0, 1]; its 95% confidence interval is a percentile bootstrap over problems (the same
resampled problem sets for every metric, so differences between methods are paired).
The estimators live in gsmv.metrics (shared with the verifier's validation).

Definitions (the paper's, with the choices it leaves open made explicit):

- test@1: the greedy sample is correct. Absent (null) when there are no greedy samples.
- pass@k: the unbiased estimator of Chen et al. 2021, 1 - C(n-c, k) / C(n, k) for c correct
  of n, computed as a product (no huge binomials). pass@n is the oracle ("coverage").
- "At N" for N < n is always the exact expectation over all N-subsets of the n samples (what
  averaging over random subsets estimates, without its noise; for votes up to a proven 1e-16).
- majority vote: the most frequent final answer among the samples. Samples without a final
  answer never vote; a problem where no sample (of the subset) has an answer counts as wrong.
  Vote ties split evenly: when the correct answer is one of t answers tied for the most votes,
  the problem scores 1/t (the expectation of a random tie-break).
- verifier best-of-N: the sample with the highest verifier score among N is graded. The sample
  ranked j-th of n is the subset's best with probability C(n-1-j, N-1) / C(n, N); samples with
  equal scores split that chance evenly (a random tie-break), so a constant verifier scores
  exactly the mean sample accuracy and a perfect one exactly pass@N.
- top-k voting (paper Fig. 7b): the k highest-scored samples of all n vote, with the vote ties
  of majority vote (split evenly). When samples tied in score straddle the k-th place, every
  choice of which of them make the top k is equally likely (the score ties of best-of-N), so
  top-1 voting is best-of-n and a constant verifier gives majority vote over k.
- verifier AUC: ROC AUC of score vs correctness over all test samples (pooled), and the mean
  of per-problem AUCs over problems with both correct and wrong samples (the ranking the
  verifier is used for). Diagnostics: no confidence interval.
- step-level truth (tasks that have it, e.g. the synthetic task): a sample's steps are right
  when gsmv.data.tasks.first_wrong_step finds no wrong step in its text. A correct sample with
  a wrong step is a false positive (right answer, wrong reasoning). "pass@1_strict" and
  "best_of_n_strict" (N = n) count a sample correct only if its answer and all its steps are
  right; "false_positive_rate" is the share of correct samples with a wrong step (pooled over
  samples); "best_of_n_false_positive" is, among problems whose verifier top-ranked sample is
  correct, the expected share whose reasoning is wrong (sum over problems of P(top sample is a
  false positive) / sum of P(top sample is correct), score ties split as above). All four are
  null when the task has no step-level truth (GSM8K).

results.json (schema_version 2; every accuracy is a fraction in [0, 1] rounded to 1e-6; tables print percent):

    {"kind": "run", "schema_version": 2, "run": str, "split": "test",
     "n_problems": int, "n_samples": int,
     "units": "fraction",
     "bootstrap": {"resamples": int, "seed": int, "level": 0.95, "method": str},
     "metrics": {name: {"value": float, "ci_low": float|null, "ci_high": float|null} | null, ...}
        names: "test@1" (null without greedy samples), "pass@1", "majority_vote", "best_of_n" (N = n),
               "oracle" (pass@n), "verifier_auc", "verifier_auc_within" (null when undefined),
               "pass@1_strict", "best_of_n_strict" (with CIs), "false_positive_rate",
               "best_of_n_false_positive" (no CI); the last four null without step-level truth
     "curves": {name: {"x": [int], "value": [float], "ci_low": [float|null], "ci_high": [float|null]}}
        names: "pass_at_k" (x = k), "best_of_n" (x = N), "majority_vote" (x = N), "top_k_voting" (x = k)
     "diagnostics": {"answered": fraction of samples with a final answer, "finished": fraction that
                     stopped at EOS (null if unknown), "mean_tokens": float|null,
                     "greedy_answered": float|null}}

"budget" (only when value-guided search ran, search.enabled): accuracy against generated tokens per
problem on the test problems search ran on (see budget()):

    {"problems": int, "unit": str, "strategies": {name: {"param": "N" | "K", "x": [int], "tokens": [float],
     "scored_tokens": [float|null], "value": [float], "ci_low": [...], "ci_high": [...]}},
     "search_settings": search/done.json (the settings the search ran with)}
        names: "greedy", "majority_vote", "best_of_n" (x = N samples), "search" (x = K beams)

Schema 1 differed in "majority_subsets" (majority vote over N < n was averaged over that many
random subsets; vote ties went to the answer seen first) and had no step-level metrics.

evaluate_reference(path) returns {"kind": "reference", "source", "n_problems", "units", "bootstrap",
"models": {model_key: metric}} for the paper's released example_model_solutions.jsonl.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gsmv.artifacts import RunPaths, atomic_write_json, iter_jsonl, list_shards, read_json_or_none
from gsmv.config import RunConfig
from gsmv.errors import GsmvError
from gsmv.metrics import (  # noqa: F401 - re-exported: evaluate's estimators, as callers know them
    LEVEL,
    auc,
    auc_within,
    best_of_n,
    bootstrap_ci,
    encode_answers,
    majority_vote,
    majority_vote_at,
    pass_at_k,
    top_k_voting,
)

SCHEMA_VERSION = 2
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
    "test@1_lm_eval_strict": "test@1, lm-eval strict-match",
    "test@1_lm_eval_flexible": "test@1, lm-eval flexible-extract",
    "pass@1_strict": "pass@1, right steps too",
    "best_of_n_strict": "best-of-N, right steps too",
    "false_positive_rate": "right answer, wrong step",
    "best_of_n_false_positive": "best-of-N right, wrong step",
}
# Metrics that need step-level truth: left out of the table when null (tasks without it).
STEP_METRICS = ("pass@1_strict", "best_of_n_strict", "false_positive_rate", "best_of_n_false_positive")
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
    # Each table row's shard (and the shards), so that columns not read up front can be read for a few rows.
    sample_shards: tuple[list[Path], np.ndarray] | None = None
    score_shards: tuple[list[Path], np.ndarray] | None = None

    def sample_columns(self, rows: np.ndarray, columns: Sequence[str]) -> pa.Table:
        """`columns` (those the shards have) of the given rows of `samples`, in that order."""
        return _columns_of(self.samples, self.sample_shards, rows, columns)

    def has_sample_column(self, name: str) -> bool:
        """Whether the sample shards have the column (read up front or not)."""
        if name in self.samples.column_names:
            return True
        return self.sample_shards is not None and any(name in pq.read_schema(p).names for p in self.sample_shards[0])

    def score_columns(self, rows: np.ndarray, columns: Sequence[str]) -> pa.Table:
        """`columns` (those the shards have) of the given rows of `score_table`, in that order."""
        return _columns_of(self.score_table, self.score_shards, rows, columns)


def _columns_of(table: pa.Table | None, shards: tuple[list[Path], np.ndarray] | None, rows: np.ndarray,
                columns: Sequence[str]) -> pa.Table:
    rows = np.asarray(rows, dtype=np.int64)
    if table is not None and (shards is None or all(c in table.column_names for c in columns)):
        return table.take(rows).select([c for c in columns if c in table.column_names])
    if shards is None:
        raise GsmvError("no table to read columns from")
    return read_rows(*shards, rows, columns)


def read_rows(shards: list[Path], shard_of: np.ndarray, rows: np.ndarray, columns: Sequence[str]) -> pa.Table:
    """`columns` of some rows of a folder read by _read_folder (row numbers in its concatenated table, in the
    order given), reading only the shards that hold them: list columns such as text, tokens and per-token values
    of every sample need gigabytes at N in the thousands, and a report shows a few hundred problems."""
    rows = np.asarray(rows, dtype=np.int64)
    first = np.concatenate([[0], np.cumsum(np.bincount(shard_of, minlength=len(shards)))])
    which = shard_of[rows] if len(rows) else np.zeros(0, dtype=np.int64)
    parts, where = [], []
    for s in np.unique(which):
        sel = np.flatnonzero(which == s)
        path = shards[int(s)]
        cols = [c for c in columns if c in pq.read_schema(path).names]
        parts.append(pq.read_table(path, columns=cols).take(rows[sel] - first[s]))
        where.append(sel)
    if not parts:
        return pa.table({})
    table = pa.concat_tables(parts, promote_options="default")
    return table.take(np.argsort(np.concatenate(where), kind="stable"))


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
    # Each distinct answer normalized once: N samples of a problem repeat a few answers (runs/synth's test
    # samples: 50,000 answers, 833 distinct).
    norm = {a: normalize_answer(a) for a in set(raw) if a is not None}
    flat_answers = [norm.get(raw[r]) for r in order]
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
                    score_table=score_table, score_rows=score_rows, greedy=greedy, greedy_rows=greedy_rows,
                    sample_shards=(shards, shard_of),
                    score_shards=(s_shards, s_shard_of) if score_table is not None else None)


# --------------------------------------------------------------------------- computing results


def step_truth(data: EvalData) -> np.ndarray | None:
    """[P, n] bool: the sample's answer is right and no step in its text is wrong (gsmv.data.tasks.first_wrong_step);
    None when the samples have no text. Only right answers are checked: the step metrics (strict accuracy, right
    answers by wrong steps) read no other, and they are a fifth of the samples or fewer, so evaluation at large N
    reads and checks a fraction of the texts.

    Only meaningful for tasks with step-level truth (Task.step_truth), where the reference's intermediate
    values are the only right ones."""
    from gsmv.data.tasks import first_wrong_step, reference_values

    if not data.has_sample_column("text"):
        return None
    ok = np.zeros(data.sample_rows.shape, dtype=bool)
    where = np.argwhere(data.correct)  # [k, 2]: (problem, sample) of the right answers
    table = data.sample_columns(data.sample_rows[where[:, 0], where[:, 1]], ["text"])
    texts = table.column("text").to_pylist() if "text" in table.column_names else [""] * len(where)
    values: dict[int, Any] = {}
    # Each distinct (problem, text) checked once: right answers repeat their text (runs/synth's test samples:
    # 8,881 right answers, 1,307 distinct texts).
    seen: dict[tuple[int, str], bool] = {}
    for (p, j), text in zip(where.tolist(), texts, strict=True):
        key = (p, text or "")
        if key not in seen:
            if p not in values:
                values[p] = reference_values(data.problems[p])
            seen[key] = first_wrong_step(key[1], values[p]) is None
        ok[p, j] = seen[key]
    return ok


def _lm_eval_greedy(data: EvalData) -> tuple[np.ndarray, np.ndarray] | None:
    """Per problem, whether the greedy sample matches under lm-evaluation-harness's strict and flexible gsm8k
    rules (gsmv.data.answers.lm_eval_matches); None without greedy texts."""
    if data.greedy is None or "text" not in data.greedy.column_names:
        return None
    from gsmv.data.answers import lm_eval_matches

    texts = data.greedy.column("text").to_pylist()
    got = [lm_eval_matches(texts[r] or "", p.solution) for p, r in zip(data.problems, data.greedy_rows, strict=True)]
    return np.array([g[0] for g in got], dtype=bool), np.array([g[1] for g in got], dtype=bool)


def compute(data: EvalData, *, bootstrap: int = 1000, seed: int = 0, steps_ok: np.ndarray | None = None) -> dict:
    """All metrics and curves of one run (see the module docstring for the schema).

    steps_ok [P, n]: the samples' step-level truth (step_truth), for the step metrics; None leaves them null."""
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
    lm_eval = _lm_eval_greedy(data)
    if lm_eval is not None:
        add(("metric", "test@1_lm_eval_strict"), lm_eval[0])
        add(("metric", "test@1_lm_eval_flexible"), lm_eval[1])
    grid = power_grid(n)
    for k in grid:
        add(("pass_at_k", k), pass_at_k(n, c, k))
    codes, code_correct = encode_answers(data.answers, data.correct)
    for N, v in zip(grid, majority_vote_at(codes, code_correct, grid), strict=True):
        add(("majority_vote", N), v)
    if data.scores is not None:
        for N, v in zip(grid, best_of_n(data.scores, data.correct, grid), strict=True):
            add(("best_of_n", N), v)
        ks = k_grid(n)
        for k, v in zip(ks, top_k_voting(data.scores, data.answers, data.correct, ks), strict=True):
            add(("top_k_voting", k), v)
    diag: dict[str, dict | None] = dict.fromkeys(STEP_METRICS)
    if steps_ok is not None:
        strict = data.correct & steps_ok  # right answer and every step right
        false_pos = data.correct & ~steps_ok
        add(("metric", "pass@1_strict"), strict.mean(axis=1))
        if data.correct.any():
            diag["false_positive_rate"] = _diag(false_pos.sum() / data.correct.sum())
        if data.scores is not None:
            add(("metric", "best_of_n_strict"), best_of_n(data.scores, strict, [n])[0])
            # Per problem P(top-ranked sample is correct) and P(it is a false positive), score ties split.
            top_ok = best_of_n(data.scores, data.correct, [n])[0].sum()
            top_fp = best_of_n(data.scores, false_pos, [n])[0].sum()
            if top_ok > 0:
                diag["best_of_n_false_positive"] = _diag(top_fp / top_ok)

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
        # lm-evaluation-harness's gsm8k extraction of the greedy sample, and majority vote under the field's name.
        "test@1_lm_eval_strict": stats.get(("metric", "test@1_lm_eval_strict")),
        "test@1_lm_eval_flexible": stats.get(("metric", "test@1_lm_eval_flexible")),
        f"maj@{n}": stats[("majority_vote", n)],
        "pass@1_strict": stats.get(("metric", "pass@1_strict")),
        "best_of_n_strict": stats.get(("metric", "best_of_n_strict")),
        "false_positive_rate": diag["false_positive_rate"],
        "best_of_n_false_positive": diag["best_of_n_false_positive"],
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
        "metrics": metrics,
        "curves": curves,
        "diagnostics": {"answered": round(answered, 6), "finished": frac("finished"),
                        "mean_tokens": frac("n_tokens"), "greedy_answered": greedy_answered},
    }


def budget(data: EvalData, search: pa.Table, *, prompt_lens: dict[str, int] | None = None,
           bootstrap: int = 1000, seed: int = 0) -> dict:
    """Accuracy against generated tokens per problem, every strategy on the problems search ran on.

    The cost of N samples of a problem is N times the mean length of its n samples (the expectation over
    N-subsets, like the accuracies); search's is what it generated (gsmv.search). Scored tokens: what the
    verifier read (prompt + solution + EOS of each sample; search counts its own). CIs: paired bootstrap
    over these problems, as in compute()."""
    index = {p.id: i for i, p in enumerate(data.problems)}
    pids = search.column("problem_id").to_pylist()
    ks = search.column("beams").to_pylist()
    unknown = sorted({pid for pid in pids if pid not in index})
    if unknown:
        raise GsmvError(f"search: problem_id '{unknown[0]}' is not in the test split")
    sub = sorted({index[pid] for pid in pids})
    col = {c: search.column(c).to_pylist() for c in ("is_correct", "generated_tokens", "scored_tokens")}
    beams = sorted(set(ks))
    by = {(index[pid], k): r for r, (pid, k) in enumerate(zip(pids, ks, strict=True))}
    missing = [(data.problems[p].id, k) for p in sub for k in beams if (p, k) not in by]
    if missing:
        raise GsmvError(f"search: problem {missing[0][0]} has no result for {missing[0][1]} beams")
    n = data.n
    if "n_tokens" not in data.samples.column_names:
        raise GsmvError("budget: the test samples have no n_tokens column")
    ntok = np.asarray(data.samples.column("n_tokens").to_numpy(zero_copy_only=False), dtype=np.float64)
    lengths = ntok[data.sample_rows[sub]]  # [P_s, n]
    fin = (np.asarray(data.samples.column("finished").fill_null(False).to_numpy(zero_copy_only=False), dtype=float)
           [data.sample_rows[sub]] if "finished" in data.samples.column_names else np.zeros_like(lengths))
    prompt = (np.array([prompt_lens[data.problems[p].id] for p in sub], dtype=float)[:, None]
              if prompt_lens is not None else None)
    correct = data.correct[sub]
    rows: list[np.ndarray] = []
    points: list[tuple[str, int, float, float | None]] = []  # (strategy, N or K, tokens, scored tokens)

    def add(name: str, x: int, v: np.ndarray, tokens: float, scored: float | None) -> None:
        rows.append(np.asarray(v, dtype=np.float64))
        points.append((name, x, tokens, scored))

    grid = power_grid(n)
    mean_len = lengths.mean(axis=1)
    read = (prompt + lengths + fin).mean(axis=1) if prompt is not None else None
    if data.greedy_correct is not None and data.greedy is not None and "n_tokens" in data.greedy.column_names:
        g = np.asarray(data.greedy.column("n_tokens").to_numpy(zero_copy_only=False), dtype=float)
        add("greedy", 1, data.greedy_correct[sub], float(g[data.greedy_rows[sub]].mean()), None)
    codes, code_correct = encode_answers([data.answers[p] for p in sub], correct)
    for N, v in zip(grid, majority_vote_at(codes, code_correct, grid), strict=True):
        add("majority_vote", N, v, float(N * mean_len.mean()), None)
    if data.scores is not None:
        for N, v in zip(grid, best_of_n(data.scores[sub], correct, grid), strict=True):
            add("best_of_n", N, v, float(N * mean_len.mean()), float(N * read.mean()) if read is not None else None)
    for k in beams:
        rs = [by[(p, k)] for p in sub]
        add("search", k, np.array([bool(col["is_correct"][r]) for r in rs]),
            float(np.mean([col["generated_tokens"][r] for r in rs])), float(np.mean([col["scored_tokens"][r] for r in rs])))
    values = np.stack(rows)
    point = values.mean(axis=1)
    lo, hi = bootstrap_ci(values, bootstrap, seed)
    out: dict[str, dict] = {}
    for i, (name, x, tokens, scored) in enumerate(points):
        cur = out.setdefault(name, {"param": "K" if name == "search" else "N", "x": [], "tokens": [],
                                    "scored_tokens": [], "value": [], "ci_low": [], "ci_high": []})
        m = _metric(point[i], lo[i], hi[i])
        cur["x"].append(int(x))
        cur["tokens"].append(round(tokens, 2))
        cur["scored_tokens"].append(None if scored is None else round(scored, 2))
        for key in ("value", "ci_low", "ci_high"):
            cur[key].append(m[key])
    return {"problems": len(sub), "unit": "generated tokens per problem (mean)", "strategies": out}


def _search_table(cfg: RunConfig) -> pa.Table | None:
    """The search stage's results when the manifest records it done for this config (its hash covers the
    search settings and everything upstream, the verifier included), whether or not this config enables it:
    `gsmv search` then `gsmv evaluate` compares them. Results of another config are left out, never mixed in."""
    from gsmv.pipeline import stage_hashes

    paths = RunPaths(cfg.run_dir)
    folder = paths.search
    manifest = read_json_or_none(paths.manifest)
    rec = manifest.get("stages", {}).get("search") if isinstance(manifest, dict) else None
    if not isinstance(rec, dict) or rec.get("status") != "done" or rec.get("hash") != stage_hashes(cfg)["search"]:
        return None
    if not (folder / "done.json").is_file() or not list_shards(folder):
        return None
    table, _, _ = _read_folder(folder, ["problem_id", "beams", "is_correct", "generated_tokens", "scored_tokens"])
    return table


def _prompt_lens(cfg: RunConfig, problems: list) -> dict[str, int] | None:
    """Prompt token counts as the verifier reads them (gsmv.models.verifier.prompt_ids); None without a verifier."""
    folder = RunPaths(cfg.run_dir).verifier_final
    if not (folder / "tokenizer_config.json").is_file():
        return None
    from transformers import AutoTokenizer

    from gsmv.models.verifier import prompt_ids

    tok = AutoTokenizer.from_pretrained(folder)
    return {p.id: len(prompt_ids(tok, p.question)) for p in problems}


def main(cfg: RunConfig) -> dict:
    """Evaluate cfg's run folder; write run_dir/results.json (main process only); return the results."""
    from accelerate import PartialState

    from gsmv.data.tasks import get_task

    steps = get_task(cfg).step_truth  # the synthetic task knows every intermediate value
    # The texts are read later, by step_truth, for the samples it checks.
    data = load_run(cfg, greedy_columns=["n_tokens", "text"])
    results = {"run": cfg.name, **compute(data, bootstrap=cfg.evaluate.bootstrap, seed=cfg.evaluate.seed,
                                          steps_ok=step_truth(data) if steps else None)}
    search = _search_table(cfg)
    if search is not None:
        searched = {pid for pid in search.column("problem_id").to_pylist()}
        lens = _prompt_lens(cfg, [p for p in data.problems if p.id in searched])
        results["budget"] = budget(data, search, prompt_lens=lens, bootstrap=cfg.evaluate.bootstrap,
                                   seed=cfg.evaluate.seed)
        results["budget"]["search_settings"] = read_json_or_none(RunPaths(cfg.run_dir).search / "done.json")
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
        if (name in STEP_METRICS or name.startswith("test@1_lm_eval")) and metric is None:  # not measurable here
            continue
        if name.startswith("maj@"):  # the field's name of majority_vote, printed on that line
            continue
        label = METRIC_LABELS.get(name, name)
        if name in ("oracle", "best_of_n") or name.startswith("best_of_n_"):
            label = label.replace("@N", f"@{n}").replace("-N", f"-{n}")
        elif name == "majority_vote":
            label = f"{label} (maj@{n})"
        v, ci = fmt_metric(name, metric)
        lines.append(f"  {label:<32} {v:>7}  {ci}")
    for key, title in (("best_of_n", "best-of-N"), ("majority_vote", "majority@N"), ("pass_at_k", "pass@k"),
                       ("top_k_voting", "top-k voting")):
        cur = results["curves"].get(key)
        if cur:
            pts = "  ".join(f"{x}:{pct(v)}" for x, v in zip(cur["x"], cur["value"], strict=True))
            lines.append(f"  {title:<13} {pts}")
    b = results.get("budget")
    if b:
        lines.append(f"  equal budget ({b['problems']} problems; accuracy at generated tokens per problem):")
        for name, cur in b["strategies"].items():
            pts = "  ".join(f"{cur['param']}={x} {t:.0f}tok:{pct(v)}"
                            for x, t, v in zip(cur["x"], cur["tokens"], cur["value"], strict=True))
            lines.append(f"    {name:<13} {pts}")
    return "\n".join(lines)
