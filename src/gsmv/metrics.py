"""The estimators: pass@k, verifier best-of-N, majority vote, top-k voting, AUC, calibration, bootstrap CIs.

Pure functions of numpy arrays, shared by the evaluation (gsmv.evaluate) and the verifier's validation
(gsmv.train.verifier), so both report the same numbers for the same samples. One rule per kind of tie:

- Verifier score ties (best-of-N; which samples top-k voting takes): every order of the tied samples is
  equally likely and the estimators return the expectation (a random tie-break without its noise).
- Vote ties (majority vote, top-k voting): the credit is split evenly among the tied answers; a vote whose
  correct answer is one of t answers tied for the most votes scores 1/t. Samples without a final answer
  never vote; a vote in which no sample has an answer is wrong.
- AUC: a tied (correct, wrong) pair counts half (Mann-Whitney).

Estimates "at N" for N < n samples are the exact expectation over all N-subsets of the n samples (what
averaging over random subsets estimates, without its noise); for votes "exact" means an error below 1e-16 that
is proven, not sampled (see _win_prob).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

LEVEL = 0.95
# Probability mass the exact vote estimator may leave out (see _win_prob): below double-precision rounding.
NEGLIGIBLE = 1e-16


# --------------------------------------------------------------------------- pass@k, best-of-N


def pass_at_k(n: int, c: np.ndarray, k: int) -> np.ndarray:
    """Per-problem unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k)/C(n, k) = 1 - prod_{i=n-c+1..n} (1 - k/i)."""
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be in [1, n={n}]")
    c = np.asarray(c, dtype=np.int64)
    out = np.ones(c.shape, dtype=np.float64)
    for cv in np.unique(c):
        if n - cv >= k:  # otherwise every k-subset holds a correct sample
            out[c == cv] = 1.0 - np.prod(1.0 - k / np.arange(n - cv + 1, n + 1, dtype=np.float64))
    return out


def best_of_n(scores: np.ndarray, correct: np.ndarray, ns: Sequence[int]) -> np.ndarray:
    """[len(ns), P]: expected correctness of the top-scored sample of a uniform random N-subset. scores, correct: [P, n].

    The sample ranked j-th of n (0-based) is the subset's best with probability C(n-1-j, N-1) / C(n, N). Samples
    with equal scores share that chance evenly, so a constant verifier scores exactly the mean sample accuracy and
    a perfect one exactly pass@N.
    """
    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    P, n = scores.shape
    order = np.argsort(-scores, axis=1, kind="stable")
    s = np.take_along_axis(scores, order, axis=1)
    c = np.take_along_axis(correct, order, axis=1)
    # Equal scores form a group; each member gets the group's mean correctness (the random tie-break).
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


def best_of_all(groups: Sequence, scores: np.ndarray, correct: np.ndarray) -> float:
    """Mean over groups (problems) of best-of-N at N = the group's own sample count; groups may differ in size."""
    groups = np.asarray(groups)
    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if groups.size == 0:
        return float("nan")
    _, inv = np.unique(groups, return_inverse=True)
    vals = []
    for g in range(inv.max() + 1):
        sel = inv == g
        vals.append(best_of_n(scores[sel][None], correct[sel][None], [int(sel.sum())])[0, 0])
    return float(np.mean(vals))


# --------------------------------------------------------------------------- votes


def encode_answers(answers: Sequence[Sequence[str | None]], correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Answers → integer codes per row, numbered by first appearance (None → -1); and code → correct.

    Returns codes [P, n] and code_correct [P, U] (U = the most distinct answers of any row). An answer's
    correctness is that of its first sample (grading is a function of the answer).
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


def vote_counts(codes: np.ndarray, n_codes: int) -> np.ndarray:
    """[rows, n_codes]: votes per answer code (codes < 0, samples without an answer, do not vote)."""
    rows = codes.shape[0]
    valid = codes >= 0
    flat = (np.arange(rows)[:, None] * n_codes + codes)[valid]
    return np.bincount(flat, minlength=rows * n_codes).reshape(rows, n_codes)


def split_vote(counts: np.ndarray, code_correct: np.ndarray) -> np.ndarray:
    """[rows]: the share of the answers tied for the most votes that are correct (0 when nobody voted)."""
    top = counts.max(axis=1, keepdims=True)
    lead = (counts == top) & (top > 0)
    return (lead & code_correct).sum(axis=1) / np.maximum(lead.sum(axis=1), 1)


def majority_vote(codes: np.ndarray, code_correct: np.ndarray) -> np.ndarray:
    """[P]: the vote of all n samples of each problem (ties split)."""
    return split_vote(vote_counts(codes, code_correct.shape[1]), code_correct)


def majority_vote_at(codes: np.ndarray, code_correct: np.ndarray, ns: Sequence[int]) -> np.ndarray:
    """[len(ns), P]: the vote of N samples, exactly averaged over all N-subsets of the n samples."""
    P, n = codes.shape
    counts = vote_counts(codes, code_correct.shape[1])
    nulls = n - counts.sum(axis=1)
    zero = np.zeros(code_correct.shape[1], dtype=np.int64)
    out = np.empty((len(ns), P))
    for r, N in enumerate(ns):
        if not 1 <= N <= n:
            raise ValueError(f"N={N} must be in [1, n={n}]")
        if N == n:
            out[r] = split_vote(counts, code_correct)
            continue
        for p in range(P):
            out[r, p] = expected_vote(zero, counts[p], int(nulls[p]), code_correct[p], N)
    return out


def top_k_voting(scores: np.ndarray, answers: Sequence[Sequence[str | None]], correct: np.ndarray,
                 ks: Sequence[int]) -> np.ndarray:
    """[len(ks), P]: the k top-scored samples vote (ties split). When samples tied in score straddle the k-th
    place, every choice of which of them are in the top k is equally likely and the vote is averaged exactly
    over those choices; so k = 1 is best-of-n, and a constant verifier gives majority vote over k samples."""
    scores = np.asarray(scores, dtype=np.float64)
    P, n = scores.shape
    codes, code_correct = encode_answers(answers, correct)
    U = code_correct.shape[1]
    order = np.argsort(-scores, axis=1, kind="stable")
    s = np.take_along_axis(scores, order, axis=1)
    ranked = np.take_along_axis(codes, order, axis=1)
    out = np.empty((len(ks), P))
    for r, k in enumerate(ks):
        if not 1 <= k <= n:
            raise ValueError(f"k={k} must be in [1, n={n}]")
        out[r] = split_vote(vote_counts(np.ascontiguousarray(ranked[:, :k]), U), code_correct)
        if k == n:
            continue
        for p in np.flatnonzero(s[:, k - 1] == s[:, k]):
            above, tied = s[p] > s[p, k - 1], s[p] == s[p, k - 1]
            base = np.bincount(ranked[p][above & (ranked[p] >= 0)], minlength=U)
            pool = np.bincount(ranked[p][tied & (ranked[p] >= 0)], minlength=U)
            nulls = int((tied & (ranked[p] < 0)).sum())
            out[r, p] = expected_vote(base, pool, nulls, code_correct[p], k - int(above.sum()))
    return out


def expected_vote(base: np.ndarray, pool: np.ndarray, nulls: int, code_correct: np.ndarray, draws: int) -> float:
    """Expected correctness (ties split) of a vote with fixed votes `base` [U] plus a uniform random `draws`-subset
    of a pool holding pool[a] samples with answer a and `nulls` samples without an answer."""
    base = np.asarray(base, dtype=np.int64)
    pool = np.asarray(pool, dtype=np.int64)
    present = np.flatnonzero((base > 0) | (pool > 0))
    total = 0.0
    for a in present[code_correct[present]]:
        rest = present[present != a]
        pairs, mult = np.unique(np.stack([base[rest], pool[rest]], axis=1), axis=0, return_counts=True)
        others = tuple((int(b), int(m), int(c)) for (b, m), c in zip(pairs, mult, strict=True))
        total += _win_prob(int(base[a]), int(pool[a]), others, int(nulls), int(draws))
    return total


def _log_factorials(n: int) -> np.ndarray:
    """log(k!) for k = 0..n at least (a table per power of two, so pools of every size share a few)."""
    return _log_factorial_table(1 << max(n, 1).bit_length())


@functools.cache
def _log_factorial_table(size: int) -> np.ndarray:
    return np.array([math.lgamma(k + 1.0) for k in range(size)])


@functools.lru_cache(maxsize=64)
def _roots_of_unity(L: int) -> np.ndarray:
    return np.exp(-2j * np.pi * np.arange(L) / L)


@functools.cache
def _gauss_01(q: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [0, 1]: exact for polynomials of degree < 2q."""
    xi, wt = np.polynomial.legendre.leggauss(q)
    return (xi + 1) / 2, wt / 2


@functools.lru_cache(maxsize=1 << 16)  # problems often share a vote profile (count pattern, draws)
# Long on purpose: one exact computation (see the docstring) whose steps share a dozen arrays; its tests
# pin it against brute-force enumeration.
def _win_prob(base_a: int, pool_a: int, others: tuple[tuple[int, int, int], ...], nulls: int, draws: int) -> float:
    """P(answer a wins the vote), a tie among t leaders counting 1/t. a has base_a fixed votes and pool_a samples in
    the pool; `others` are (fixed votes, pool samples, how many answers look like that); `draws` of the pool's
    M samples are drawn uniformly without replacement.

    The vote is summed over x = a's draws. Where no other answer can reach a's total, the term is the
    hypergeometric P(x). Otherwise the others' joint count distribution is multivariate hypergeometric, which we
    write as independent Binomial(m_i, t = draws / M) inclusions conditioned on the total being `draws`
    (Poissonization: every configuration with that total has the same weight, so the condition restores the
    hypergeometric exactly). Independence makes the constraint "every other answer at most a's total" a
    product of per-answer truncated generating functions in z (z counts draws); the condition on the total is
    the coefficient [z^draws], read off by evaluating the product at L roots of unity. The 1/(1+ties) weight is
    the integral over w in [0, 1] of w^ties, done by Gauss-Legendre quadrature with enough nodes for the largest
    possible number of ties (exact for a polynomial). All factors are probabilities: nothing overflows.

    Two cuts keep thousands of samples fast, each with a proven error bound of NEGLIGIBLE (1e-16, below the
    rounding of the sums): terms of x whose total hypergeometric weight is below it are dropped, and L is the
    smallest length whose aliased coefficients (totals that differ from `draws` by L or more, bounded by the
    Binomial(M, t) tail) weigh less than it relative to the result; L = M + 1 has no aliasing at all.
    """
    ob = np.array([o[0] for o in others], dtype=np.int64)
    om = np.array([o[1] for o in others], dtype=np.int64)
    mult = np.array([o[2] for o in others], dtype=np.int64)
    M = pool_a + int((om * mult).sum()) + nulls
    if draws <= 0 or draws >= M:  # no choice left: an ordinary vote
        mine = base_a + (pool_a if draws > 0 else 0)
        theirs = ob + (om if draws > 0 else 0)
        if mine == 0 or (theirs > mine).any():
            return 0.0
        return 1.0 / (1 + int(mult[theirs == mine].sum()))
    lf = _log_factorials(M)
    t = draws / M
    logt, log1t = math.log(t), math.log1p(-t)

    def log_comb(a: int | np.ndarray, b: np.ndarray | int) -> np.ndarray:
        return lf[a] - lf[b] - lf[np.subtract(a, b)]

    xs = np.arange(max(0, draws - (M - pool_a)), min(pool_a, draws) + 1)
    xs = xs[base_a + xs >= 1]  # a vote for a is needed to win
    if xs.size == 0:
        return 0.0
    rem = draws - xs  # draws left for the others and the samples without an answer
    need = (base_a + xs)[:, None] - ob[None, :]  # another answer's draws that tie with a's total
    possible = (need >= 0).all(axis=1) & (nulls + (np.minimum(om, np.maximum(need, 0)) * mult).sum(axis=1) >= rem)
    reach = (need >= 0) & (need <= np.minimum(om, rem[:, None]))  # another answer can tie (or pass) a
    weight = np.exp(log_comb(pool_a, xs) + log_comb(M - pool_a, rem) - log_comb(M, draws))  # P(a draws x)
    clear = possible & ~reach.any(axis=1)
    value = float(weight[clear].sum())
    hard = np.flatnonzero(possible & ~clear)
    lightest = hard[np.argsort(weight[hard], kind="stable")]
    hard = np.sort(lightest[np.cumsum(weight[lightest]) > NEGLIGIBLE])  # drop terms weighing < NEGLIGIBLE in all
    if hard.size == 0:
        return min(value, 1.0)
    xs, rem, need, reach = xs[hard], rem[hard], need[hard], reach[hard]

    d = np.arange(M + 1)
    p_all = np.exp(log_comb(M, d) + d * logt + (M - d) * log1t)  # Binomial(M, t): the total's law
    far = np.bincount(np.abs(d - draws), weights=p_all, minlength=M + 2)
    tail = np.cumsum(far[::-1])[::-1]  # tail[k] = P(|total - draws| >= k)
    L = int(np.argmax(tail <= NEGLIGIBLE * p_all[draws]))
    L = max(L, 1)
    ell = np.arange(L)
    unit = _roots_of_unity(L)

    def zpow(x: np.ndarray) -> np.ndarray:  # [len(x), L]: z_l^x at z_l = exp(-2 pi i l / L)
        return unit[(np.asarray(x)[:, None] * ell[None, :]) % L]

    def pmf(m: int) -> np.ndarray:  # Binomial(m, t) at 0..m
        x = np.arange(m + 1)
        return np.exp(log_comb(m, x) + x * logt + (m - x) * log1t)

    one = 1 - t + t * unit  # one sample's generating function at the roots
    # Quadrature nodes: at most `zero` answers tie without a draw (their fixed votes equal a's total), plus as
    # many of the others as `rem` draws can bring to exactly a's total.
    tie_need = np.where(reach & (need >= 1), need, M + 1)
    expanded = np.sort(np.repeat(tie_need, mult, axis=1), axis=1)
    fits = (np.cumsum(expanded, axis=1) <= rem[:, None]).sum(axis=1)
    zero = ((need == 0) * mult).sum(axis=1)
    nodes = (zero + fits) // 2 + 1
    if hard.size * int(nodes.max()) * L > 100_000:  # big: rows needing few nodes do not pay for the others
        nodes = 2 ** np.ceil(np.log2(nodes)).astype(np.int64)  # (more nodes stay exact; few buckets, few calls)
        buckets = {int(q): np.flatnonzero(nodes == q) for q in np.unique(nodes)}
    else:  # small: fewer numpy calls matter more
        nodes[:] = nodes.max()
        buckets = {int(nodes[0]): np.arange(hard.size)}
    slot = np.empty(hard.size, dtype=np.int64)  # row -> its position in its bucket
    for idx in buckets.values():
        slot[idx] = np.arange(idx.size)
    quad = {q: _gauss_01(q) for q in buckets}
    acc = {q: np.ones((idx.size, q, L), dtype=complex) for q, idx in buckets.items()}
    whole = np.full(hard.size, nulls, dtype=np.int64)  # samples left unconstrained, per row
    never = (need > om).all(axis=0)  # answers that cannot reach a's total in any row
    whole += int((om * mult)[never].sum())
    for g in np.flatnonzero(~never):
        ng = need[:, g]
        free = ng > om[g]  # never reaches a's total: its whole generating function
        whole[free] += om[g] * mult[g]
        act = np.flatnonzero(~free)
        if act.size == 0:
            continue
        ng = ng[act]
        p = pmf(int(om[g]))
        below = ng - 1  # the most draws strictly under a's total (-1: none)
        rows = np.zeros((act.size, L), dtype=complex)
        has = below >= 0
        if has.any():
            b0, b1 = int(below[has].min()), int(below[has].max())
            folded = np.bincount(np.arange(b0 + 1) % L, weights=p[:b0 + 1], minlength=L)
            table = np.fft.fft(folded)[None]  # sum_{x <= b0} p(x) z_l^x
            if b1 > b0:
                steps = p[b0 + 1:b1 + 1, None] * zpow(np.arange(b0 + 1, b1 + 1))
                table = np.concatenate([table, table + np.cumsum(steps, axis=0)])
            rows[has] = table[below[has] - b0]
        tie = p[ng, None] * zpow(ng)
        for q in buckets:
            mine = np.flatnonzero(nodes[act] == q)
            if mine.size:
                f = rows[mine, None, :] + quad[q][0][None, :, None] * tie[mine, None, :]
                acc[q][slot[act[mine]]] *= f if mult[g] == 1 else f ** int(mult[g])
    pa = pmf(pool_a)
    series = np.zeros(L, dtype=complex)
    for q, idx in buckets.items():
        s = np.einsum("cql,q->cl", acc[q], quad[q][1]) * np.power(one[None, :], whole[idx, None])
        series += (pa[xs[idx], None] * zpow(xs[idx]) * s).sum(axis=0)
    coef = float((series * unit[(-draws * ell) % L]).sum().real) / L
    return min(max(value + coef / p_all[draws], 0.0), 1.0)


# --------------------------------------------------------------------------- ranking and calibration


def _midranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    _, inv, counts = np.unique(x[order], return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts
    ranks = np.empty(len(x))
    ranks[order] = (starts + (counts + 1) / 2.0)[inv]
    return ranks


def auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC AUC (Mann-Whitney, ties count half) over all samples; None without both classes."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=bool).ravel()
    pos = int(labels.sum())
    neg = labels.size - pos
    if pos == 0 or neg == 0:
        return None
    r = _midranks(scores)
    return float((r[labels].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def auc_within(scores: Sequence[np.ndarray], correct: Sequence[np.ndarray]) -> float | None:
    """Mean per-problem AUC over problems with both correct and wrong samples (rows may differ in length)."""
    vals = [a for s, c in zip(scores, correct, strict=True) if (a := auc(s, c)) is not None]
    return float(np.mean(vals)) if vals else None


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Σ_b (n_b / n) · |accuracy_b − mean confidence_b| over equal-width probability bins; NaN without samples."""
    probs = np.asarray(probs, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=np.float64).ravel()
    if probs.size == 0:
        return float("nan")
    idx = np.clip((probs * bins).astype(int), 0, bins - 1)
    gap = np.bincount(idx, weights=labels - probs, minlength=bins)  # n_b · (accuracy_b − confidence_b)
    return float(np.abs(gap).sum() / probs.size)


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared error of the probabilities against the 0/1 labels; NaN without samples."""
    probs = np.asarray(probs, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=np.float64).ravel()
    return float(((probs - labels) ** 2).mean()) if probs.size else float("nan")


# --------------------------------------------------------------------------- confidence intervals


def bootstrap_ci(values: np.ndarray, resamples: int, seed: int, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Percentile CIs of the mean over problems for each row of values [M, P], paired across rows.

    The resampled problem sets are drawn once and applied to every metric through a count matrix, so
    M metrics × B resamples cost one [B, P] @ [P, M] product.
    """
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    M, P = values.shape
    if resamples <= 0 or P == 0:
        nan = np.full(M, np.nan)
        return nan, nan.copy()
    means = bootstrap_sums(values, resamples, seed) / P  # [B, M]
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha], axis=0)
    return lo, hi


def bootstrap_sums(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """[B, M]: the sum over a resampled problem set of each row of values [M, P]; the same problem sets as
    bootstrap_ci's for the same P and seed, so statistics built from sums (ratios such as F1) are paired with
    the means."""
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    P = values.shape[1]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, P, size=(resamples, P))
    counts = np.bincount((idx + (np.arange(resamples) * P)[:, None]).ravel(), minlength=resamples * P)
    return counts.reshape(resamples, P).astype(np.float64) @ values.T


# --------------------------------------------------------------------------- confidence you can act on


def selective_accuracy(confidence: np.ndarray, value: np.ndarray, coverages: Sequence[float]) -> np.ndarray:
    """[len(coverages)]: mean `value` (per-problem correctness) over the ⌈c·P⌉ problems of highest confidence,
    for each coverage c. Problems tied in confidence at the cut are taken in a random order, so each counts in
    proportion to the places left for its tie group (the exact expectation of a random tie-break)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    value = np.asarray(value, dtype=np.float64)
    P = len(confidence)
    order = np.argsort(-confidence, kind="stable")
    c, v = confidence[order], value[order]
    # group of equal confidences: [start, end) in the sorted order
    new = np.ones(P, dtype=bool)
    new[1:] = c[1:] != c[:-1]
    gid = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], P)
    gsum = np.bincount(gid, weights=v)
    before = np.concatenate([[0.0], np.cumsum(gsum)])
    out = np.empty(len(coverages))
    for i, cov in enumerate(coverages):
        k = max(1, int(np.ceil(cov * P - 1e-9))) if P else 0
        if k == 0:
            out[i] = np.nan
            continue
        g = gid[k - 1]
        inside = k - starts[g]  # places the tie group at the cut gets
        out[i] = (before[g] + gsum[g] * inside / (ends[g] - starts[g])) / k
    return out


def selective_curve(confidence: np.ndarray, value: np.ndarray, coverages: Sequence[float], resamples: int,
                    seed: int, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(accuracy, CI low, CI high) of selective_accuracy at each coverage; the CI resamples problems (the
    draws of bootstrap_ci for the same P and seed) and selects again within each resample."""
    point = selective_accuracy(confidence, value, coverages)
    P = len(confidence)
    if resamples <= 0 or P == 0:
        nan = np.full(len(coverages), np.nan)
        return point, nan, nan.copy()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, P, size=(resamples, P))
    boot = np.stack([selective_accuracy(confidence[r], value[r], coverages) for r in idx])
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(boot, [alpha, 1.0 - alpha], axis=0)
    return point, lo, hi


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> list[dict]:
    """Equal-width bins of predicted probability: count, mean prediction and observed accuracy of each
    non-empty bin (a reliability diagram's points; expected_calibration_error weighs their gaps)."""
    probs = np.asarray(probs, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=np.float64).ravel()
    idx = np.clip((probs * bins).astype(int), 0, bins - 1)
    cnt = np.bincount(idx, minlength=bins)
    conf = np.bincount(idx, weights=probs, minlength=bins)
    acc = np.bincount(idx, weights=labels, minlength=bins)
    return [{"low": b / bins, "high": (b + 1) / bins, "count": int(cnt[b]),
             "confidence": round(float(conf[b] / cnt[b]), 6), "accuracy": round(float(acc[b] / cnt[b]), 6)}
            for b in range(bins) if cnt[b]]
