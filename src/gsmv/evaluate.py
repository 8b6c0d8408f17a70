"""Evaluate a run's test samples: test@1, pass@k, majority vote, verifier best-of-N, top-k voting.

Inputs (run folder): samples/test (n samples per problem at T>0), scores/test (the
verifier's value per sample) and, when present, samples/test_greedy (one T=0 sample per
problem, for test@1). Every metric is a mean over test problems of a per-problem value in
[0, 1]; its 95% confidence interval is a percentile bootstrap over problems (the same
resampled problem sets for every metric, so differences between methods are paired).
The estimators live in gsmv.metrics (shared with the verifier's validation), the reading and
cross-checking of the run folder in gsmv.run_data, the labels and the printed table in gsmv.formatting.

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
     "aggregate": score.aggregate, what best-of-N and top-k voting ranked by (gsmv.steps; "last" = the paper's),
     "metrics": {name: {"value": float, "ci_low": float|null, "ci_high": float|null} | null, ...}
        names: "test@1" (null without greedy samples), "pass@1", "majority_vote", "best_of_n" (N = n),
               "weighted_vote" (score-weighted vote over all n, gsmv.steps.weighted_vote_at),
               "test@1_lm_eval_strict"/"_flexible" (lm-evaluation-harness's gsm8k grading rules applied to
               gsmv's calculator-assisted greedy sample: not the harness's own number, which decodes without
               the calculator),
               "oracle" (pass@n), "verifier_auc", "verifier_auc_within" (null when undefined),
               "pass@1_strict", "best_of_n_strict" (with CIs), "false_positive_rate",
               "best_of_n_false_positive" (no CI); the last four null without step-level truth
     "curves": {name: {"x": [int], "value": [float], "ci_low": [float|null], "ci_high": [float|null]}}
        names: "pass_at_k" (x = k), "best_of_n" (x = N), "majority_vote" (x = N), "top_k_voting" (x = k),
               "weighted_vote" (x = N; exact at N = n, a Monte Carlo mean over random N-subsets below)
     "diagnostics": {"answered": fraction of samples with a final answer, "finished": fraction that
                     stopped at EOS (null if unknown), "mean_tokens": float|null,
                     "greedy_answered": float|null, "weighted_vote_mc_se": the weighted vote curve's
                     largest Monte Carlo standard error|null},
     "selective": {"answer": "majority vote", "coverage": [fraction answered],
                   "signals": {"verifier" (mean score of the problem's samples) | "vote_share":
                               {"value": [...], "ci_low": [...], "ci_high": [...]}}},
     "calibration": {"ece", "brier", "bins": [{"low", "high", "count", "confidence", "accuracy"}]} | null,
     "steps": gsmv.steps.run_steps' section: {"aggregates": {last|min|product|mean: {"best_of_n", "auc",
              "auc_within"}}, "steps_per_sample", on tasks with step truth "localization" (threshold from
              val, F1 and both accuracies of the verifier and its baselines on all and balanced samples) and
              "step_auc"} or {"note": why not (no per-token values)}}

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

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from gsmv.artifacts import (
    RunPaths,
    atomic_write_json,
    iter_jsonl,
    list_shards,
    read_json_or_none,
    read_shards,
)
from gsmv.config import RunConfig
from gsmv.errors import GsmvError
from gsmv.formatting import STEP_METRICS
from gsmv.metrics import (  # noqa: F401 - re-exported: evaluate's estimators, as callers know them
    LEVEL,
    auc,
    auc_within,
    best_of_n,
    bootstrap_ci,
    brier,
    encode_answers,
    expected_calibration_error,
    majority_vote,
    majority_vote_at,
    pass_at_k,
    reliability_bins,
    selective_curve,
    top_k_voting,
    vote_counts,
)
from gsmv.run_data import EvalData, load_run
from gsmv.steps import weighted_vote_at

SCHEMA_VERSION = 2
REFERENCE_MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


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


def _bootstrap_info(bootstrap: int, seed: int) -> dict:
    return {"resamples": int(bootstrap), "seed": int(seed), "level": LEVEL,
            "method": "percentile; problems resampled with replacement; paired across metrics"}


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


def _step_values(data: EvalData, steps_ok: np.ndarray | None,
                 add: Callable[[tuple[str, Any], np.ndarray], None]) -> dict[str, dict | None]:
    """The step metrics: add()s the per-problem rows of those with a CI; returns the pooled ones (no CI)."""
    diag: dict[str, dict | None] = dict.fromkeys(STEP_METRICS)
    if steps_ok is None:
        return diag
    n = data.correct.shape[1]
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
    return diag


def _per_problem(data: EvalData, steps_ok: np.ndarray | None) -> tuple[list[tuple[str, Any]], list[np.ndarray],
                                                                        dict[str, dict | None]]:
    """The per-problem values of every metric and curve point, one row each, named (kind, x) with kind "metric"
    or a curve's name; and the step metrics without a CI."""
    n = data.correct.shape[1]
    c = data.correct.sum(axis=1)
    rows: list[np.ndarray] = []
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
        votes, mc_se = weighted_vote_at(data.scores, codes, code_correct, grid)
        for N, v in zip(grid, votes, strict=True):
            add(("weighted_vote", N), v)
    diag = _step_values(data, steps_ok, add)
    if data.scores is not None:
        diag["weighted_vote_mc_se"] = round(mc_se, 6)
    return names, rows, diag


def _curves(stats: dict[tuple[str, Any], dict]) -> dict[str, dict]:
    curves: dict[str, dict] = {}
    for (kind, x), m in stats.items():
        if kind == "metric":
            continue
        cur = curves.setdefault(kind, {"x": [], "value": [], "ci_low": [], "ci_high": []})
        cur["x"].append(int(x))
        for key in ("value", "ci_low", "ci_high"):
            cur[key].append(m[key])
    return curves


def _metrics(data: EvalData, stats: dict[tuple[str, Any], dict], diag: dict[str, dict | None],
             n: int) -> dict[str, dict | None]:
    return {
        "test@1": stats.get(("metric", "test@1")),
        "pass@1": stats[("pass_at_k", 1)],
        "majority_vote": stats[("majority_vote", n)],
        "best_of_n": stats.get(("best_of_n", n)),
        "weighted_vote": stats.get(("weighted_vote", n)),
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


COVERAGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def _confidence(data: EvalData, bootstrap: int, seed: int) -> tuple[dict, dict | None]:
    """The selective-answer curves (answer the majority vote only on the problems ranked surest: accuracy of
    the answered share) by the verifier's mean value over the problem's samples and by the vote share of the
    majority answer, paired bootstrap CIs; and the verifier's calibration over all test samples."""
    codes, code_correct = encode_answers(data.answers, data.correct)
    right = majority_vote(codes, code_correct)
    counts = vote_counts(codes, code_correct.shape[1])
    signals = {"vote_share": counts.max(axis=1) / data.n}
    if data.scores is not None:
        signals["verifier"] = data.scores.mean(axis=1)
    curves = {}
    for name, conf in signals.items():
        v, lo, hi = selective_curve(conf, right, COVERAGES, bootstrap, seed)
        curves[name] = {k: [_metric(a, b, c)[k] for a, b, c in zip(v, lo, hi, strict=True)]
                        for k in ("value", "ci_low", "ci_high")}
    selective = {"answer": "majority vote", "coverage": list(COVERAGES), "signals": curves}
    if data.scores is None:
        return selective, None
    probs, labels = data.scores.ravel(), data.correct.ravel()
    calibration = {"ece": round(expected_calibration_error(probs, labels), 6), "brier": round(brier(probs, labels), 6),
                   "bins": reliability_bins(probs, labels)}
    return selective, calibration


def _diagnostics(data: EvalData) -> dict:
    from gsmv.data.answers import normalize_answer

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
    return {"answered": round(answered, 6), "finished": frac("finished"), "mean_tokens": frac("n_tokens"),
            "greedy_answered": greedy_answered}


def compute(data: EvalData, *, bootstrap: int = 1000, seed: int = 0, steps_ok: np.ndarray | None = None) -> dict:
    """All metrics and curves of one run (see the module docstring for the schema).

    steps_ok [P, n]: the samples' step-level truth (step_truth), for the step metrics; None leaves them null."""
    P, n = data.correct.shape
    names, rows, diag = _per_problem(data, steps_ok)
    values = np.stack(rows)
    point = values.mean(axis=1)
    lo, hi = bootstrap_ci(values, bootstrap, seed)
    stats = {name: _metric(point[i], lo[i], hi[i]) for i, name in enumerate(names)}
    selective, calibration = _confidence(data, bootstrap, seed)
    return {
        "kind": "run",
        "schema_version": SCHEMA_VERSION,
        "split": "test",
        "n_problems": P,
        "n_samples": n,
        "units": "fraction",
        "bootstrap": _bootstrap_info(bootstrap, seed),
        "metrics": _metrics(data, stats, diag, n),
        "curves": _curves(stats),
        "diagnostics": {**_diagnostics(data), "weighted_vote_mc_se": diag.get("weighted_vote_mc_se")},
        "selective": selective,
        "calibration": calibration,
    }


def _searched(data: EvalData, search: pa.Table) -> tuple[list[int], list[int], dict[tuple[int, int], int], dict]:
    """Search's results checked against the test split: (the problems searched, the beam counts, (problem, K) →
    row, the columns the budget reads)."""
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
    return sub, beams, by, col


def _budget_points(data: EvalData, search: pa.Table, prompt_lens: dict[str, int] | None
                   ) -> tuple[int, list[np.ndarray], list[tuple[str, int, float, float | None]]]:
    """(problems searched, per-problem correctness of each point, each point's (strategy, N or K, tokens,
    scored tokens))."""
    sub, beams, by, col = _searched(data, search)
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
    points: list[tuple[str, int, float, float | None]] = []

    def add(name: str, x: int, v: np.ndarray, tokens: float, scored: float | None) -> None:
        rows.append(np.asarray(v, dtype=np.float64))
        points.append((name, x, tokens, scored))

    grid = power_grid(data.n)
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
            float(np.mean([col["generated_tokens"][r] for r in rs])),
            float(np.mean([col["scored_tokens"][r] for r in rs])))
    return len(sub), rows, points


def budget(data: EvalData, search: pa.Table, *, prompt_lens: dict[str, int] | None = None,
           bootstrap: int = 1000, seed: int = 0) -> dict:
    """Accuracy against generated tokens per problem, every strategy on the problems search ran on.

    The cost of N samples of a problem is N times the mean length of its n samples (the expectation over
    N-subsets, like the accuracies); search's is what it generated (gsmv.search). Scored tokens: what the
    verifier read (prompt + solution + EOS of each sample; search counts its own). CIs: paired bootstrap
    over these problems, as in compute()."""
    problems, rows, points = _budget_points(data, search, prompt_lens)
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
    return {"problems": problems, "unit": "generated tokens per problem (mean)", "strategies": out}


def _search_table(cfg: RunConfig) -> pa.Table | None:
    """The search stage's results when the manifest records it done for this config (its hash covers the
    search settings and everything upstream, the verifier included), whether or not this config enables it:
    `gsmv search` then `gsmv evaluate` compares them. Results of another config are left out, never mixed in."""
    from gsmv.manifest import is_current

    folder = RunPaths(cfg.run_dir).search
    if not is_current(cfg, "search"):
        return None
    if not (folder / "done.json").is_file() or not list_shards(folder):
        return None
    return read_shards(folder, ["problem_id", "beams", "is_correct", "generated_tokens", "scored_tokens"]).table


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
    from gsmv.steps import run_steps

    steps = get_task(cfg).step_truth  # the synthetic task knows every intermediate value
    # The texts are read later, by step_truth, for the samples it checks.
    data = load_run(cfg, greedy_columns=["n_tokens", "text"])
    step_section, aggregated = run_steps(cfg, data, truth=steps, bootstrap=cfg.evaluate.bootstrap,
                                         seed=cfg.evaluate.seed)
    how = cfg.score.aggregate
    if how != "last":
        if how not in aggregated:
            raise GsmvError(f"config key 'score.aggregate' is '{how}': it reads the verifier's values at step ends, "
                            f"and {step_section.get('note', 'the run has none')} (or use score.aggregate=last)")
        data.scores = aggregated[how]
    results = {"run": cfg.name, "aggregate": how,
               **compute(data, bootstrap=cfg.evaluate.bootstrap, seed=cfg.evaluate.seed,
                         steps_ok=step_truth(data) if steps else None)}
    results["steps"] = step_section
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
        "bootstrap": _bootstrap_info(bootstrap, seed),
        "models": {m: _metric(values[i].mean(), lo[i], hi[i]) for i, m in enumerate(REFERENCE_MODELS)},
    }
