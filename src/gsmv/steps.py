"""What a verifier knows step by step: its value at each step's end, step-aggregated scores, first-error
localization (ProcessBench) and score-weighted voting.

A step is an annotation `<<expr=result>>` (gsmv.data.calculator); its end is the token that closes its `>>`,
and the verifier's value there is read from the score stage's per-token values (scores/<split>, column
token_values, aligned with the sample's own tokens). On a task with step-level truth (the synthetic task) a
step is right when its result is one of the reference's intermediate values (gsmv.data.tasks.first_wrong_step's
rule), so every sample has an exact first wrong step, with no human label.

Definitions:

- Aggregations (`score.aggregate`) of a sample's values at its step ends and at its final token (the score):
  `last` (the final token's value: the paper's and this project's default), `min` (Math-Shepherd), `product`
  (Lightman et al.; values clipped to [0, 1] first, since an MSE head can leave that range) and `mean`. A sample
  with no step has only its final value, so every aggregation is its score.
- Localization (ProcessBench, arXiv 2412.06559): a sample's label is the index of its first wrong step, or -1
  when no step is wrong and its answer is right. Samples with no wrong step whose answer is wrong (a wrong
  final line, or no checkable step) have no label: they are counted apart ("unlabelled"), never scored. The
  prediction is the first step whose value is below a threshold, or -1 when none is. Accuracy on erroneous
  samples (prediction = label) and on correct ones (prediction = -1), pooled over samples; F1 is their
  harmonic mean. The threshold maximises F1 on the val split and is then applied unchanged to test.
- Baselines beside it: "first step" (always predicts step 0), "no error" (always -1), and "difficulty only"
  (every step of a sample gets its problem's mean score: the verifier's knowledge of which problems are hard,
  nothing within a problem; its own threshold chosen on val the same way).
- The balanced subset: problems with both correct and erroneous samples, and from each as many correct as
  erroneous samples (the first ones by sample index): what makes F1 comparable to ProcessBench's.
- Step AUC: each step end's value against whether the solution prefix that ends there is right (no wrong step
  so far); pooled over all step ends, and the mean of per-problem AUCs (problems with both kinds of prefix).
- Score-weighted vote (Math-Shepherd): each answer's samples' scores (clipped at 0) are summed and the answer
  with the largest sum is picked, ties split evenly. At N = n it is exact. Below n it is the mean over
  `subsets` random N-subsets per problem (the same random order's prefixes for every N): unlike majority vote
  (gsmv.metrics.majority_vote_at), the exact expectation over all N-subsets is a count of subsets whose weight
  sums cross each other, a subset-sum count with no polynomial algorithm for real weights. Its Monte Carlo
  error is reported (the largest over N of the standard error of the mean over problems).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gsmv.errors import GsmvError

AGGREGATES = ("last", "min", "product", "mean")
WEIGHTED_VOTE_SUBSETS = 200
# Random orders drawn in all (problems x subsets x n) at most: evaluate at 1,319 x 3,200 samples stays in its
# time; the Monte Carlo error that leaves is reported beside the curve.
WEIGHTED_VOTE_WORK = 50_000_000


# --------------------------------------------------------------------------- reading steps out of samples


def step_ends(pieces: Sequence[str]) -> tuple[list[int], list[str]]:
    """(the index of the token that closes each annotation, the annotation's result) from a sample's token
    texts (gsmv.token_text.token_pieces_batch); offsets are taken in the pieces' own joined text."""
    ends, results = step_ends_batch([list(pieces)])
    return ends[0], results[0]


# Between two samples' texts in step_ends_batch: no annotation can contain `<` or `>` (calculator.ANNOTATION_RE), nor
# start with `<>`, so none spans it or begins in it.
_SEPARATOR = "<>"


def step_ends_batch(pieces: Sequence[Sequence[str] | None]) -> tuple[list[list[int]], list[list[str]]]:
    """step_ends for many samples at once (None: a sample whose tokens could not be decoded, no steps): one regex
    pass over all texts joined and one search of the token ends, so a run's 50,000 test samples take a second
    rather than one numpy round trip per sample. Token k of a sample covers chars [end(k-1), end(k)); an
    annotation closes in the first token whose end reaches the annotation's end."""
    from gsmv.data.calculator import ANNOTATION_RE

    parts: list[str] = []
    first = np.zeros(len(pieces), dtype=np.int64)  # global index of each sample's first piece
    for s, pc in enumerate(pieces):
        first[s] = len(parts)
        parts.extend(pc or ())
        parts.append(_SEPARATOR)
    ends = np.cumsum(np.fromiter(map(len, parts), dtype=np.int64, count=len(parts)))
    found = list(ANNOTATION_RE.finditer("".join(parts)))
    out_ends: list[list[int]] = [[] for _ in pieces]
    out_results: list[list[str]] = [[] for _ in pieces]
    if not found:
        return out_ends, out_results
    g = np.searchsorted(ends, np.fromiter((m.end() for m in found), dtype=np.int64, count=len(found)), side="left")
    sample = np.searchsorted(first, g, side="right") - 1
    for m, s, k in zip(found, sample.tolist(), (g - first[sample]).tolist(), strict=True):
        out_ends[s].append(k)
        out_results[s].append(m.group("result").strip())
    return out_ends, out_results


@dataclass
class SampleSteps:
    """Per sample of one split, flat in the order given: its problem, answer truth, score and steps."""

    problem: np.ndarray  # int [S]: index into the split's problems
    correct: np.ndarray  # bool [S]: the final answer is right
    final: np.ndarray  # float [S]: the score (value at the final token)
    values: list[np.ndarray]  # [S] of float [steps]: the value at each step end
    ok: list[np.ndarray] | None  # [S] of bool [steps]: the step's result is a reference value (None: no truth)

    @property
    def n_problems(self) -> int:
        return int(self.problem.max()) + 1 if len(self.problem) else 0


def sample_steps(problem: np.ndarray, correct: np.ndarray, final: np.ndarray, pieces: Sequence[list[str] | None],
                 token_values: Sequence[Sequence[float]], truth: Sequence[frozenset[str]] | None) -> SampleSteps:
    """Steps of each sample from its token texts and per-token values; `truth[p]`: problem p's intermediate
    values (None: no step truth). A sample whose tokens cannot be decoded into its text, or whose values do
    not reach a step's end (a verifier input cut at max_len), keeps the steps that have a value."""
    ends, results = step_ends_batch(pieces)
    ok = None if truth is None else [np.array([r in truth[p] for r in rs], dtype=bool)
                                     for p, rs in zip(np.asarray(problem).tolist(), results, strict=True)]
    values, ok = _values_at_ends(ends, ok, token_values)
    return SampleSteps(np.asarray(problem, dtype=np.int64), np.asarray(correct, dtype=bool),
                       np.asarray(final, dtype=np.float64), values, ok)


def _values_at_ends(ends: Sequence[Sequence[int]], ok: Sequence[np.ndarray] | None,
                    token_values: Sequence[Sequence[float] | None]) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Each sample's values at its step ends, and the truth of the steps kept: a step whose closing token has no
    value (NaN: cut off a verifier input longer than max_len, never read; past the end: not scored) is dropped."""
    values, oks = [], []
    for s, (e, tv) in enumerate(zip(ends, token_values, strict=True)):
        tv = np.asarray(tv if tv is not None else [], dtype=np.float64)
        keep = [i for i, t in enumerate(e) if t < len(tv) and np.isfinite(tv[t])]
        values.append(tv[[e[i] for i in keep]] if keep else np.zeros(0))
        if ok is not None:
            oks.append(np.asarray(ok[s], dtype=bool)[keep])
    return values, (oks if ok is not None else None)


# --------------------------------------------------------------------------- aggregations


def aggregate(values: Sequence[np.ndarray], final: np.ndarray, how: str) -> np.ndarray:
    """[S]: each sample's score under `how` over its step-end values and its final value."""
    if how not in AGGREGATES:
        raise GsmvError(f"score.aggregate is '{how}': valid values are {', '.join(AGGREGATES)}")
    final = np.asarray(final, dtype=np.float64)
    if how == "last" or len(final) == 0:
        return final.copy()
    # One flat array, each sample's step values then its final value, reduced segment by segment (every
    # segment holds at least the final value).
    counts = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    starts = np.concatenate([[0], np.cumsum(counts + 1)[:-1]])
    last = starts + counts
    flat = np.empty(int(counts.sum()) + len(final))
    steps = np.ones(len(flat), dtype=bool)
    steps[last] = False
    flat[steps] = np.concatenate(values) if counts.sum() else np.zeros(0)
    flat[last] = final
    if how == "min":
        return np.minimum.reduceat(flat, starts)
    if how == "mean":
        return np.add.reduceat(flat, starts) / (counts + 1)
    return np.multiply.reduceat(np.clip(flat, 0.0, 1.0), starts)


def aggregate_sequences(tokenizer: Any, solutions: Sequence[Sequence[int]], values: Sequence[np.ndarray],
                        final: Sequence[float], how: str) -> list[float]:
    """Each solution's score under `how`, from its ids (in `tokenizer`'s vocabulary, EOS included or not) and the
    verifier's value after each of them (score_sequences' per-token values): what `gsmv solve` and `gsmv search`
    rank by when score.aggregate is not last."""
    from gsmv.token_text import token_pieces_batch

    if how == "last":
        return [float(f) for f in final]
    ids = [list(s) for s in solutions]
    texts = [tokenizer.decode(s, skip_special_tokens=True, clean_up_tokenization_spaces=False) for s in ids]
    pieces = token_pieces_batch(tokenizer, ids, texts)
    steps = sample_steps(np.zeros(len(ids), dtype=np.int64), np.zeros(len(ids), dtype=bool), np.asarray(final),
                         pieces, [np.asarray(v, dtype=np.float64) for v in values], None)
    return [float(x) for x in aggregate(steps.values, steps.final, how)]


# --------------------------------------------------------------------------- localization


def first_error_labels(ok: Sequence[np.ndarray], correct: np.ndarray) -> np.ndarray:
    """[S]: the index of each sample's first wrong step; -1 when no step is wrong and the answer is right; -2
    (unlabelled, counted apart) when no step is wrong but the answer is."""
    out = np.empty(len(ok), dtype=np.int64)
    for s, o in enumerate(ok):
        wrong = np.flatnonzero(~o)
        out[s] = wrong[0] if len(wrong) else (-1 if correct[s] else -2)
    return out


def predict_first_error(values: Sequence[np.ndarray], threshold: float) -> np.ndarray:
    """[S]: the first step whose value is below the threshold, -1 when none is."""
    out = np.full(len(values), -1, dtype=np.int64)
    for s, v in enumerate(values):
        below = np.flatnonzero(v < threshold)
        if len(below):
            out[s] = below[0]
    return out


def hit_counts(labels: np.ndarray, preds: np.ndarray, problem: np.ndarray, P: int) -> np.ndarray:
    """[4, P] per problem: erroneous hits, erroneous samples, correct hits, correct samples (unlabelled left out)."""
    err, cor = labels >= 0, labels == -1
    hit = preds == labels

    def per(mask: np.ndarray) -> np.ndarray:
        return np.bincount(problem[mask], minlength=P).astype(np.float64)

    return np.stack([per(err & hit), per(err), per(cor & hit), per(cor)])


def f1_of(sums: np.ndarray) -> tuple[float, float, float]:
    """(F1, accuracy on erroneous, accuracy on correct) from summed hit counts [4, ...]; NaN where undefined."""
    with np.errstate(invalid="ignore", divide="ignore"):
        a = sums[0] / sums[1]
        b = sums[2] / sums[3]
        f = np.where(a + b > 0, 2 * a * b / (a + b), 0.0)
        f = np.where(np.isnan(a) | np.isnan(b), np.nan, f)
    return f, a, b


def choose_threshold(values: Sequence[np.ndarray], labels: np.ndarray) -> float:
    """The threshold that maximises F1 over these samples (the smallest such; +inf when there are none to
    learn from, which predicts step 0 for every sample with a step).

    A sample is predicted right for thresholds in an interval: an erroneous one with label L when its value
    at L is below t and no earlier value is ((v_L, min v_<L]), a correct one when no value is below t
    ((-inf, min v]). F1 is constant between those right ends, so they (and +inf) are the only candidates, and
    all are scored at once with sorted ends."""
    err_lo, err_hi, cor_hi = [], [], []
    for v, lab in zip(values, labels, strict=True):
        if lab >= 0 and lab < len(v):
            lo, hi = v[lab], (v[:lab].min() if lab > 0 else np.inf)
            if lo < hi:
                err_lo.append(lo)
                err_hi.append(hi)
        elif lab == -1:
            cor_hi.append(v.min() if len(v) else np.inf)
    n_err, n_cor = int((labels >= 0).sum()), int((labels == -1).sum())
    if n_err == 0 or n_cor == 0:
        return float("inf")
    cands = np.unique(np.concatenate([err_hi, cor_hi, [np.inf]]))
    lo, hi, ch = np.sort(err_lo), np.sort(err_hi), np.sort(cor_hi)
    # err hits at t: lo < t <= hi  ->  #(lo < t) - #(hi < t); correct hits: #(ch >= t)
    e = np.searchsorted(lo, cands, side="left") - np.searchsorted(hi, cands, side="left")
    c = len(ch) - np.searchsorted(ch, cands, side="left")
    f, _, _ = f1_of(np.stack([e, np.full(len(cands), n_err), c, np.full(len(cands), n_cor)]).astype(np.float64))
    return float(cands[int(np.nanargmax(f))])


def balanced_subset(labels: np.ndarray, problem: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """bool [S]: from each problem with both correct and erroneous samples, the first k of each kind (by
    `order`, default the given order), k the smaller count."""
    order = np.arange(len(labels)) if order is None else np.asarray(order)
    keep = np.zeros(len(labels), dtype=bool)
    for p in np.unique(problem):
        idx = np.flatnonzero(problem == p)
        idx = idx[np.argsort(order[idx], kind="stable")]
        err, cor = idx[labels[idx] >= 0], idx[labels[idx] == -1]
        k = min(len(err), len(cor))
        keep[err[:k]] = True
        keep[cor[:k]] = True
    return keep


def difficulty_values(steps: SampleSteps) -> list[np.ndarray]:
    """Every step of a sample valued at its problem's mean score: knowledge of difficulty only."""
    P = steps.n_problems
    mean = np.bincount(steps.problem, weights=steps.final, minlength=P) / np.maximum(
        np.bincount(steps.problem, minlength=P), 1)
    return [np.full(len(v), mean[p]) for v, p in zip(steps.values, steps.problem, strict=True)]


# --------------------------------------------------------------------------- step AUC


def step_auc(steps: SampleSteps) -> dict[str, float | None]:
    """Pooled and within-problem AUC of step-end values against prefix truth; and within-problem AUC of the
    first step's value against that step's truth."""
    from gsmv.metrics import auc, auc_within

    assert steps.ok is not None
    vals = np.concatenate([v for v in steps.values] or [np.zeros(0)])
    pref = np.concatenate([np.cumprod(o).astype(bool) for o in steps.ok] or [np.zeros(0, dtype=bool)])
    prob = np.concatenate([np.full(len(v), p) for v, p in zip(steps.values, steps.problem, strict=True)]
                          or [np.zeros(0, dtype=np.int64)]).astype(np.int64)
    first = np.array([len(v) > 0 for v in steps.values], dtype=bool)
    fv = np.array([v[0] for v, f in zip(steps.values, first, strict=True) if f])
    fo = np.array([o[0] for o, f in zip(steps.ok, first, strict=True) if f], dtype=bool)
    fp = steps.problem[first]

    def within(v: np.ndarray, y: np.ndarray, p: np.ndarray) -> float | None:
        groups = [np.flatnonzero(p == q) for q in np.unique(p)]
        return auc_within([v[g] for g in groups], [y[g] for g in groups])

    return {"pooled": auc(vals, pref), "within": within(vals, pref, prob),
            "first_step_within": within(fv, fo, fp) if len(fv) else None}


# --------------------------------------------------------------------------- score-weighted vote


def weighted_vote_at(scores: np.ndarray, codes: np.ndarray, code_correct: np.ndarray, ns: Sequence[int],
                     subsets: int | None = None, seed: int = 0) -> tuple[np.ndarray, float]:
    """([len(ns), P] per-problem expected correctness of the score-weighted vote of N samples, the Monte Carlo
    standard error of the mean over problems, largest over N). scores, codes [P, n] (codes < 0: no answer);
    code_correct [P, U]. Exact at N = n; a mean over `subsets` random N-subsets below (module docstring)."""
    scores = np.clip(np.asarray(scores, dtype=np.float64), 0.0, None)
    codes = np.asarray(codes)
    P, n = scores.shape
    for N in ns:
        if not 1 <= N <= n:
            raise ValueError(f"N={N} must be in [1, n={n}]")
    if subsets is None:
        subsets = int(np.clip(WEIGHTED_VOTE_WORK // max(P * n, 1), 16, WEIGHTED_VOTE_SUBSETS))
    out = np.zeros((len(ns), P))
    var = np.zeros(len(ns))
    rng = np.random.default_rng(seed)
    chunk = max(1, 50_000 // subsets)  # problems whose subsets are voted together
    for lo in range(0, P, chunk):
        ps = np.arange(lo, min(P, lo + chunk))
        # Every problem gets its own random orders; an N-subset is the first N of one (a shuffle: O(n) a row).
        perm = rng.permuted(np.broadcast_to(np.arange(n), (len(ps) * subsets, n)), axis=1)
        rows = np.repeat(ps, subsets)
        c, w = codes[rows[:, None], perm], scores[rows[:, None], perm]
        for r, N in enumerate(ns):
            if N == n:
                out[r, ps] = _vote_share(codes[ps], scores[ps], code_correct[ps])
                continue
            got = _vote_share(c[:, :N], w[:, :N], code_correct[rows]).reshape(len(ps), subsets)
            out[r, ps] = got.mean(axis=1)
            var[r] += (got.var(axis=1) / subsets).sum()  # each problem's mean's variance; / P^2 below
    return out, float(np.sqrt(var.max()) / P) if P else 0.0


def _vote_share(codes: np.ndarray, weights: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """[rows]: the share of the answers tied for the largest weight sum that are correct (0 when none voted);
    correct [rows, U]: which answer codes are right for each row's problem."""
    rows, U = codes.shape[0], correct.shape[1]
    voted = codes >= 0
    flat = (codes + U * np.arange(rows)[:, None])[voted]
    sums = np.bincount(flat, weights=weights[voted], minlength=rows * U).reshape(rows, U)
    has = np.bincount(flat, minlength=rows * U).reshape(rows, U) > 0
    sums = np.where(has, sums, -np.inf)
    lead = has & (sums == sums.max(axis=1, keepdims=True))
    n_lead = lead.sum(axis=1)
    return np.where(n_lead > 0, (lead & correct).sum(axis=1) / np.maximum(n_lead, 1), 0.0)


# --------------------------------------------------------------------------- a run's splits


@dataclass
class SplitSamples:
    """One split's samples (shard order), each with its steps: where they end (token index) and their truth."""

    keys: list[tuple[str, int]]  # (problem_id, sample_idx)
    problem: np.ndarray  # int [S]: index into the split's problems
    correct: np.ndarray  # bool [S]
    tokens: list[list[int]]
    ends: list[list[int]]  # token index closing each step
    ok: list[np.ndarray] | None  # bool per step (None: no step truth)


def read_split_samples(cfg: Any, split: str, problems: list, with_truth: bool, limit: int = 0,
                       tokenizer: Any = None) -> SplitSamples | str:
    """samples/<split> (the first `limit` rows; 0 = all) with each sample's steps, found with `tokenizer` (default:
    the run's, gsmv.token_text.load_tokenizer); a one-line reason when the run has none."""
    from gsmv.artifacts import RunPaths, read_shards
    from gsmv.data.tasks import reference_values
    from gsmv.token_text import load_decoder, token_pieces_batch

    tokenizer = tokenizer if tokenizer is not None else load_decoder(cfg.run_dir)
    if tokenizer is None:
        return f"{cfg.run_dir}: no tokenizer to find the steps' tokens (generator/final or tokenizer/)"
    t = read_shards(RunPaths(cfg.run_dir).samples(split), ["problem_id", "sample_idx", "tokens", "text",
                                                            "is_correct"]).table
    if limit:
        t = t.slice(0, limit)
    index = {p.id: i for i, p in enumerate(problems)}
    pids = t.column("problem_id").to_pylist()
    unknown = next((p for p in pids if p not in index), None)
    if unknown is not None:
        raise GsmvError(f"{RunPaths(cfg.run_dir).samples(split)}: problem_id {unknown!r} is not in the {split} split")
    tokens = [list(x or []) for x in t.column("tokens").to_pylist()]
    texts = [x or "" for x in t.column("text").to_pylist()]
    ends, all_results = step_ends_batch(token_pieces_batch(tokenizer, tokens, texts))
    problem = np.array([index[p] for p in pids], dtype=np.int64)
    oks = []
    if with_truth:
        truth = {int(p): reference_values(problems[int(p)]) for p in np.unique(problem)}
        oks = [np.array([r in truth[p] for r in results], dtype=bool)
               for p, results in zip(problem.tolist(), all_results, strict=True)]
    return SplitSamples(list(zip(pids, t.column("sample_idx").to_pylist(), strict=True)), problem,
                        np.array([bool(x) for x in t.column("is_correct").to_pylist()], dtype=bool), tokens, ends,
                        oks if with_truth else None)


def steps_with_values(samples: SplitSamples, final: np.ndarray, token_values: Sequence[np.ndarray]) -> SampleSteps:
    """SampleSteps of these samples with the values after each of their tokens (_values_at_ends)."""
    values, ok = _values_at_ends(samples.ends, samples.ok, token_values)
    return SampleSteps(samples.problem, samples.correct, np.asarray(final, dtype=np.float64), values, ok)


def read_split_steps(cfg: Any, split: str, problems: list, with_truth: bool, tokenizer: Any = None
                     ) -> tuple[SampleSteps, np.ndarray] | str:
    """(the steps of every sample of `split` with the verifier's values, their sample indices) from
    samples/<split> and scores/<split>; or, when that cannot be done, a one-line reason (no scores, no
    per-token values, no tokenizer)."""
    from gsmv.artifacts import RunPaths, list_shards, read_shards

    paths = RunPaths(cfg.run_dir)
    if not list_shards(paths.scores(split)):
        return f"no scores of the {split} samples ({paths.scores(split)}; `gsmv run` scores them)"
    sc = read_shards(paths.scores(split), ["problem_id", "sample_idx", "score", "token_values"]).table
    tv = sc.column("token_values").to_pylist()
    if sum(len(v or []) for v in tv) == 0:
        return ("the scores hold no per-token values (score.keep_token_values=false, or a verifier that reads "
                "text in its own vocabulary): rerun `gsmv score` with score.keep_token_values=true")
    samples = read_split_samples(cfg, split, problems, with_truth, tokenizer=tokenizer)
    if isinstance(samples, str):
        return samples
    row = {k: i for i, k in enumerate(zip(sc.column("problem_id").to_pylist(), sc.column("sample_idx").to_pylist(),
                                          strict=True))}
    missing = next((k for k in samples.keys if k not in row), None)
    if missing is not None or len(row) != len(samples.keys):
        what = f"problem {missing[0]} sample {missing[1]} has no score" if missing else "scores without a sample"
        raise GsmvError(f"{paths.scores(split)}: {what} (rerun `gsmv score`)")
    order = np.array([row[k] for k in samples.keys], dtype=np.int64)
    final = np.asarray(sc.column("score").to_numpy(zero_copy_only=False), dtype=np.float64)[order]
    steps = steps_with_values(samples, final, [tv[i] for i in order])
    return steps, np.array([k[1] for k in samples.keys], dtype=np.int64)


# --------------------------------------------------------------------------- results.json's "steps"


def _ci(sums: np.ndarray, boot: np.ndarray | None, level: float) -> dict:
    """{"f1", "acc_erroneous", "acc_correct"} each {"value", "ci_low", "ci_high"}, from summed counts [4] and
    their bootstrap resamples [B, 4]; and the counts."""
    f, a, b = (float(x) for x in f1_of(sums))
    out: dict[str, Any] = {}
    for i, (name, v) in enumerate((("f1", f), ("acc_erroneous", a), ("acc_correct", b))):
        lo = hi = None
        if boot is not None and np.isfinite(v):
            r = f1_of(boot.T)[i]
            r = r[np.isfinite(r)]
            if len(r):
                lo, hi = (float(x) for x in np.quantile(r, [(1 - level) / 2, (1 + level) / 2]))
        out[name] = {"value": _round(v), "ci_low": _round(lo), "ci_high": _round(hi)}
    out["erroneous"], out["correct"] = int(sums[1]), int(sums[3])
    return out


def _round(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def localization(test: SampleSteps, val: SampleSteps | None, test_order: np.ndarray, *, bootstrap: int,
                 seed: int) -> dict:
    """ProcessBench F1 of the verifier's values and of the baselines on test, all and balanced, thresholds
    chosen on val (module docstring); CIs: bootstrap over test problems (the evaluation's draws)."""
    from gsmv.metrics import LEVEL, bootstrap_sums

    assert test.ok is not None
    P = test.n_problems
    labels = first_error_labels(test.ok, test.correct)
    balanced = balanced_subset(labels, test.problem, test_order)
    out: dict[str, Any] = {"unlabelled": int((labels == -2).sum()), "samples": len(labels),
                           "first_step_share": _round(float((labels == 0).sum() / max((labels >= 0).sum(), 1)))}
    thresholds: dict[str, float | None] = {"verifier": None, "difficulty": None}
    if val is not None and val.ok is not None:
        vlab = first_error_labels(val.ok, val.correct)
        thresholds = {"verifier": choose_threshold(val.values, vlab),
                      "difficulty": choose_threshold(difficulty_values(val), vlab)}
    # +inf (val had no erroneous or no correct sample: predict step 0 everywhere) is written as null.
    out["threshold"] = None if thresholds["verifier"] is None else _round(thresholds["verifier"])
    out["threshold_from"] = "val" if thresholds["verifier"] is not None else None
    preds = {
        "first_step": np.where(np.array([len(v) > 0 for v in test.values]), 0, -1),
        "no_error": np.full(len(labels), -1),
    }
    if thresholds["verifier"] is not None:
        preds["verifier"] = predict_first_error(test.values, thresholds["verifier"])
        preds["difficulty"] = predict_first_error(difficulty_values(test), thresholds["difficulty"])
    for subset, mask in (("all", np.ones(len(labels), dtype=bool)), ("balanced", balanced)):
        block: dict[str, Any] = {}
        for name, pr in preds.items():
            counts = hit_counts(labels[mask], pr[mask], test.problem[mask], P)  # [4, P]
            boot = bootstrap_sums(counts, bootstrap, seed) if bootstrap > 0 and P else None
            block[name] = _ci(counts.sum(axis=1), boot, LEVEL)
        out[subset] = block
    out["difficulty_threshold"] = None if thresholds["difficulty"] is None else _round(thresholds["difficulty"])
    return out


def run_steps(cfg: Any, data: Any, *, truth: bool, bootstrap: int, seed: int) -> tuple[dict, dict[str, np.ndarray]]:
    """The "steps" section of results.json for a run's test samples (gsmv.run_data.EvalData) and each
    aggregation's scores [P, n]; {} for those where the run has no per-token values (the section then says
    why in "note"). `truth`: the task has step-level truth (localization and step AUC)."""
    from gsmv.metrics import auc, auc_within, best_of_n, bootstrap_ci
    from gsmv.token_text import load_decoder

    P, n = data.correct.shape
    tok = load_decoder(cfg.run_dir)  # once for test and val
    got = read_split_steps(cfg, "test", data.problems, truth, tokenizer=tok)
    if isinstance(got, str):
        return {"note": got}, {}
    test, sidx = got
    pos = test.problem * n + sidx
    if len(pos) != P * n or len(np.unique(pos)) != P * n:
        raise GsmvError(f"{cfg.run_dir}: the test scores do not cover each of the {P} x {n} samples once")
    order = np.argsort(pos)
    scores = {how: aggregate(test.values, test.final, how)[order].reshape(P, n) for how in AGGREGATES}
    rows = np.stack([best_of_n(scores[how], data.correct, [n])[0] for how in AGGREGATES])
    lo, hi = bootstrap_ci(rows, bootstrap, seed)
    section: dict[str, Any] = {"aggregates": {
        how: {"best_of_n": {"value": _round(rows[i].mean()), "ci_low": _round(lo[i]), "ci_high": _round(hi[i])},
              "auc": _round(auc(scores[how], data.correct)), "auc_within": _round(auc_within(scores[how], data.correct))}
        for i, how in enumerate(AGGREGATES)}}
    section["steps_per_sample"] = _round(float(np.mean([len(v) for v in test.values])))
    if truth:
        val = None
        vgot = read_split_steps(cfg, "val", _val_problems(cfg), True, tokenizer=tok)
        if isinstance(vgot, str):
            section["note"] = f"localization threshold not chosen: {vgot}"
        else:
            val = vgot[0]
        section["localization"] = localization(test, val, sidx, bootstrap=bootstrap, seed=seed)
        section["step_auc"] = {k: _round(v) for k, v in step_auc(test).items()}
    return section, scores


def _val_problems(cfg: Any) -> list:
    from gsmv.data.tasks import load_split

    return load_split(cfg, "val")
