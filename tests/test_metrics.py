"""The estimators of gsmv.metrics against brute-force enumeration, and their tie rules."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from gsmv import metrics as M

# --------------------------------------------------------------------------- pass@k, best-of-N


def test_pass_at_k_matches_brute_force_enumeration():
    for n in range(1, 8):
        for c in range(n + 1):
            labels = [1] * c + [0] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(labels, k))
                want = sum(any(s) for s in subsets) / len(subsets)
                got = M.pass_at_k(n, np.array([c]), k)[0]
                assert got == pytest.approx(want, abs=1e-12), (n, c, k)


def test_pass_at_k_is_stable_for_large_n():
    n = 1000
    cs = np.array([0, 1, 5, 500, 999, 1000])
    for k in (1, 10, 100, 999):
        got = M.pass_at_k(n, cs, k)
        want = [1 - float(Fraction(math.comb(n - c, k), math.comb(n, k))) for c in cs]
        assert np.allclose(got, want, atol=1e-12)
        assert np.all((got >= 0) & (got <= 1))
    assert M.pass_at_k(n, np.array([3]), 1)[0] == pytest.approx(3 / n)


def _best_of_n_brute(scores: np.ndarray, correct: np.ndarray, N: int) -> float:
    """Mean over all N-subsets of the correctness of the top-scored sample; ties split evenly."""
    vals = []
    for sub in itertools.combinations(range(len(scores)), N):
        top = max(scores[j] for j in sub)
        tied = [correct[j] for j in sub if scores[j] == top]
        vals.append(sum(tied) / len(tied))
    return sum(vals) / len(vals)


def test_best_of_n_is_the_exact_expectation_over_subsets():
    rng = np.random.default_rng(1)
    P, n = 6, 7
    scores = rng.integers(0, 4, size=(P, n)).astype(float)  # few levels: many ties
    correct = rng.random((P, n)) < 0.4
    ns = [1, 2, 3, 5, 7]
    got = M.best_of_n(scores, correct, ns)
    for p in range(P):
        for r, N in enumerate(ns):
            assert got[r, p] == pytest.approx(_best_of_n_brute(scores[p], correct[p], N), abs=1e-12)


def test_best_of_n_perfect_verifier_is_the_oracle_and_constant_is_mean_accuracy():
    rng = np.random.default_rng(2)
    P, n = 50, 16
    correct = rng.random((P, n)) < rng.random((P, 1))
    ns = [1, 2, 4, 8, 16]
    perfect = M.best_of_n(correct.astype(float) + 0.01 * rng.random((P, n)), correct, ns)
    for r, N in enumerate(ns):
        assert np.allclose(perfect[r], M.pass_at_k(n, correct.sum(1), N))
    constant = M.best_of_n(np.zeros((P, n)), correct, ns)
    assert np.allclose(constant, correct.mean(axis=1)[None, :])


def test_random_subset_average_agrees_with_exact_best_of_n():
    rng = np.random.default_rng(3)
    n, N = 10, 3
    scores = rng.random(n)
    correct = rng.random(n) < 0.5
    exact = M.best_of_n(scores[None], correct[None], [N])[0, 0]
    picks = [correct[sub[np.argmax(scores[sub])]] for sub in (rng.choice(n, N, replace=False) for _ in range(20000))]
    assert np.mean(picks) == pytest.approx(exact, abs=0.015)


def test_best_of_all_takes_each_groups_top_sample_and_splits_ties():
    s = np.array([0.1, 0.4, 0.35, 0.8])
    y = np.array([0, 0, 1, 1], dtype=bool)
    assert M.best_of_all(["a", "b", "a", "b"], s, y) == pytest.approx(1.0)  # a picks 0.35, b picks 0.8
    assert M.best_of_all(["a", "b", "b", "a"], s, y) == pytest.approx(0.5)  # a picks 0.8 (right), b 0.4 (wrong)
    # A tie for the top score splits evenly (the first sample does not win it); groups may differ in size.
    assert M.best_of_all(["a", "a", "a", "b"], np.array([0.9, 0.9, 0.1, 0.2]), np.array([1, 0, 1, 0])) == 0.25
    assert math.isnan(M.best_of_all([], np.array([]), np.array([])))


# --------------------------------------------------------------------------- votes


def _codes(rows, correct_answer="7"):
    correct = np.array([[a == correct_answer for a in row] for row in rows])
    return M.encode_answers(rows, correct)


def test_majority_vote_counts_answers_ignores_missing_ones_and_splits_ties():
    rows = [
        ["7", "3", "7", None],  # 7 wins 2-1
        ["3", None, None, "7"],  # tie 1-1: half
        [None, None, None, None],  # nobody voted: wrong
        ["3", "7", "7", "3"],  # tie 2-2: half, whichever appears first
        [None, "7", None, None],  # one voter
        ["3", "9", "7", "5"],  # four-way tie: a quarter
    ]
    codes, code_correct = _codes(rows)
    assert M.majority_vote(codes, code_correct).tolist() == [1, 0.5, 0, 0.5, 1, 0.25]


def _vote_brute(members: list[int], base: np.ndarray, code_correct: np.ndarray, draws: int) -> float:
    """Mean over all draws-subsets of the members (answer codes, -1 = no answer) of the split vote."""
    vals = []
    for sub in itertools.combinations(members, draws):
        counts = base.copy()
        for a in sub:
            if a >= 0:
                counts[a] += 1
        vals.append(M.split_vote(counts[None], code_correct[None])[0])
    return float(np.mean(vals))


def test_majority_vote_at_is_the_exact_expectation_over_subsets():
    rng = np.random.default_rng(4)
    worst = 0.0
    for _ in range(150):
        n = int(rng.integers(1, 9))
        k = int(rng.integers(1, 5))
        row = [str(v) if v < k else None for v in rng.integers(0, k + 1, n)]
        # Usually one correct answer; sometimes none or two (a grader may accept two spellings).
        correct = np.array([[a is not None and (a == "0" or (a == "1" and rng.random() < 0.3)) for a in row]])
        codes, code_correct = M.encode_answers([row], correct)
        ns = list(range(1, n + 1))
        got = M.majority_vote_at(codes, code_correct, ns)[:, 0]
        for N, g in zip(ns, got, strict=True):
            want = _vote_brute(codes[0].tolist(), np.zeros(code_correct.shape[1], int), code_correct[0], N)
            worst = max(worst, abs(g - want))
    assert worst < 1e-12
    # N = n is the full vote.
    codes, code_correct = _codes([["7", "3", "3", "7", None, "7"]])
    assert M.majority_vote_at(codes, code_correct, [6])[0, 0] == M.majority_vote(codes, code_correct)[0] == 1.0


def test_vote_with_fixed_votes_is_the_exact_expectation_over_subsets():
    # The general case top-k voting needs: fixed votes plus a random subset of a tied pool.
    rng = np.random.default_rng(5)
    for _ in range(150):
        U = int(rng.integers(1, 5))
        base = rng.integers(0, 3, U) * (rng.random(U) < 0.5)
        pool = rng.integers(0, 4, U)
        nulls = int(rng.integers(0, 3))
        cc = rng.random(U) < 0.4
        members = [a for a in range(U) for _ in range(pool[a])] + [-1] * nulls
        for draws in range(len(members) + 1):
            got = M.expected_vote(base, pool, nulls, cc, draws)
            assert got == pytest.approx(_vote_brute(members, base, cc, draws), abs=1e-12)


def test_win_probabilities_of_all_answers_sum_to_the_chance_that_someone_votes():
    # Exactness at a size brute force cannot reach: every subset with a vote has exactly one unit of credit.
    counts = np.array([300, 250, 250, 100, 50, 30, 20, 5, 5, 1, 1, 1])
    nulls, n = 40, 300 + 250 + 250 + 100 + 50 + 30 + 20 + 5 + 5 + 3 + 40
    for N in (1, 2, 7, 64, 300, 1000):
        total = sum(M.expected_vote(np.zeros_like(counts), counts, nulls, np.arange(len(counts)) == a, N)
                    for a in range(len(counts)))
        nobody = math.comb(nulls, N) / math.comb(n, N)
        assert total == pytest.approx(1 - nobody, abs=1e-12), N
        # The two tied answers (250, 250) win equally often.
        w = [M.expected_vote(np.zeros_like(counts), counts, nulls, np.arange(len(counts)) == a, N) for a in (1, 2)]
        assert w[0] == pytest.approx(w[1], abs=1e-14)


def test_majority_vote_at_agrees_with_random_subsets_for_many_samples():
    rng = np.random.default_rng(6)
    n, N = 400, 40
    row = [str(v) if v < 6 else None for v in rng.choice(8, n, p=[0.3, 0.25, 0.2, 0.1, 0.05, 0.05, 0.025, 0.025])]
    codes, code_correct = M.encode_answers([row], np.array([[a == "1" for a in row]]))
    exact = M.majority_vote_at(codes, code_correct, [N])[0, 0]
    U = code_correct.shape[1]
    votes = [M.split_vote(M.vote_counts(codes[:, rng.choice(n, N, replace=False)], U), code_correct)[0]
             for _ in range(4000)]
    assert np.mean(votes) == pytest.approx(exact, abs=0.025)


def test_majority_vote_at_thousands_of_samples():
    # The paper's largest N: 3200 samples per problem (its speed is benchmarks/bench_evaluate.py's job).
    rng = np.random.default_rng(7)
    P, n = 4, 3200
    correct = rng.random((P, n)) < rng.random((P, 1))
    wrong = rng.integers(0, 6, size=(P, n))
    rows = [[("ok" if correct[p, j] else str(wrong[p, j])) for j in range(n)] for p in range(P)]
    codes, code_correct = M.encode_answers(rows, correct)
    got = M.majority_vote_at(codes, code_correct, [1, 16, 256, 2048, n])
    assert np.all((got >= 0) & (got <= 1))
    assert np.allclose(got[0], correct.mean(1))  # one voter: the sample accuracy


def test_top_k_voting_uses_the_verifier_ranking():
    # Ranked by score: s0 (answer 9), s1 (7), s2 (7), s3 (9), s4 (None); the reference is 7.
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5]])
    rows = [["9", "7", "7", "9", None]]
    correct = np.array([[a == "7" for a in rows[0]]])
    got = M.top_k_voting(scores, rows, correct, [1, 2, 3, 4, 5])[:, 0]
    # k=1: 9. k=2: tie 9/7 → half. k=3: 7 wins 2-1. k=4,5: tie 2-2 → half.
    assert got.tolist() == [0, 0.5, 1, 0.5, 0.5]
    # Shuffling the samples (with their scores) changes nothing.
    perm = [3, 0, 4, 2, 1]
    got2 = M.top_k_voting(scores[:, perm], [[rows[0][i] for i in perm]], correct[:, perm], [1, 2, 3, 4, 5])[:, 0]
    assert got2.tolist() == got.tolist()


def test_top_k_voting_limits_are_best_of_n_and_majority_vote():
    rng = np.random.default_rng(8)
    P, n = 40, 12
    rows = [[str(v) for v in rng.integers(0, 4, n)] for _ in range(P)]
    correct = np.array([[a == "0" for a in r] for r in rows])
    scores = rng.integers(0, 3, (P, n)).astype(float)  # many score ties
    top = M.top_k_voting(scores, rows, correct, [1, n])
    assert np.allclose(top[0], M.best_of_n(scores, correct, [n])[0], atol=1e-12)
    codes, code_correct = M.encode_answers(rows, correct)
    assert np.array_equal(top[1], M.majority_vote(codes, code_correct))
    # A constant verifier picks a uniform random k-subset: majority vote over k.
    ks = [1, 2, 3, 5, 8]
    assert np.allclose(M.top_k_voting(np.zeros((P, n)), rows, correct, ks), M.majority_vote_at(codes, code_correct, ks),
                       atol=1e-12)


def test_top_k_voting_averages_over_score_ties_at_the_cut():
    rng = np.random.default_rng(9)
    for _ in range(40):
        n = int(rng.integers(2, 8))
        row = [str(v) if v < 3 else None for v in rng.integers(0, 4, n)]
        correct = np.array([[a == "0" for a in row]])
        scores = rng.integers(0, 3, (1, n)).astype(float)
        for k in range(1, n + 1):
            # Brute force: every order of the tied samples is equally likely.
            vals = []
            for noise in itertools.permutations(range(n)):
                order = sorted(range(n), key=lambda j: (-scores[0, j], noise[j]))
                counts = {}
                for j in order[:k]:
                    if row[j] is not None:
                        counts[row[j]] = counts.get(row[j], 0) + 1
                top = max(counts.values(), default=0)
                lead = [a for a, v in counts.items() if v == top]
                vals.append(("0" in lead) / len(lead) if lead else 0.0)
            got = M.top_k_voting(scores, [row], correct, [k])[0, 0]
            assert got == pytest.approx(np.mean(vals), abs=1e-12), (row, scores, k)


# --------------------------------------------------------------------------- AUC, calibration


def test_auc_counts_pairs_and_ties_half():
    rng = np.random.default_rng(10)
    s = rng.integers(0, 5, 40).astype(float)
    y = rng.random(40) < 0.5
    pos, neg = s[y], s[~y]
    want = np.mean([(a > b) + 0.5 * (a == b) for a in pos for b in neg])
    assert M.auc(s, y) == pytest.approx(want)
    assert M.auc(s, np.ones(40, bool)) is None
    assert M.auc(np.array([0.5, 0.5]), np.array([0, 1], dtype=bool)) == pytest.approx(0.5)
    assert M.auc_within(np.array([[1.0, 0.0], [0.0, 1.0], [1, 2]]), np.array([[1, 0], [1, 0], [1, 1]])) == 0.5
    assert M.auc_within([np.array([1.0])], [np.array([True])]) is None


def test_calibration_error_and_brier():
    s = np.array([0.1, 0.4, 0.35, 0.8])
    y = np.array([0, 0, 1, 1], dtype=bool)
    # one sample per bin: 0.1 (wrong) → .1, 0.35 (right) → .65, 0.4 (wrong) → .4, 0.8 (right) → .2
    assert M.expected_calibration_error(s, y) == pytest.approx(0.25 * (0.1 + 0.65 + 0.4 + 0.2))
    # two samples sharing a bin: |mean label − mean confidence| weighted by the bin's share
    assert M.expected_calibration_error(np.array([0.31, 0.39]), np.array([1.0, 0.0])) == pytest.approx(0.15)
    assert M.expected_calibration_error(np.array([1.0, 0.0]), np.array([1.0, 0.0])) == 0.0  # 1.0 is the top bin
    assert math.isnan(M.expected_calibration_error(np.array([]), np.array([])))
    assert M.brier(s, y) == pytest.approx(np.mean((s - y) ** 2))
    assert math.isnan(M.brier(np.array([]), np.array([])))


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_estimate_and_shrinks_with_more_problems():
    rng = np.random.default_rng(11)
    widths = []
    for P in (100, 1600):
        v = (rng.random((3, P)) < np.array([[0.2], [0.5], [0.9]])).astype(float)
        lo, hi = M.bootstrap_ci(v, 1000, seed=0)
        mean = v.mean(1)
        assert np.all(lo <= mean) and np.all(mean <= hi)
        assert np.all(hi - lo > 0)
        widths.append(hi - lo)
    assert np.all(widths[1] < widths[0] / 2)  # about 1/sqrt(16) = 1/4
    ones = np.ones((1, 50))
    assert M.bootstrap_ci(ones, 200, 0)[0][0] == 1.0 == M.bootstrap_ci(ones, 200, 0)[1][0]
    a = M.bootstrap_ci(v, 300, seed=3)
    b = M.bootstrap_ci(v, 300, seed=3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


# --------------------------------------------------------------------------- selective answering, calibration


def _selective_brute(conf, value, cov):
    """Mean over every order of the problems that sorts confidence descending (every tie-break) of the mean
    value of the first ⌈cov·P⌉."""
    import itertools

    P = len(conf)
    k = max(1, int(np.ceil(cov * P - 1e-9)))
    got = [np.mean([value[i] for i in perm[:k]]) for perm in itertools.permutations(range(P))
           if all(conf[perm[i]] >= conf[perm[i + 1]] for i in range(P - 1))]
    return float(np.mean(got))


def test_selective_accuracy_averages_tie_breaks_exactly():
    from gsmv.metrics import selective_accuracy

    conf = np.array([0.9, 0.5, 0.5, 0.5, 0.2, 0.9])
    value = np.array([1.0, 0.0, 1.0, 0.5, 0.0, 0.0])
    covs = [0.1, 0.2, 0.34, 0.5, 0.67, 0.8, 1.0]
    want = [_selective_brute(conf, value, c) for c in covs]
    assert selective_accuracy(conf, value, covs) == pytest.approx(want)


def test_selective_curve_interval_holds_the_point_and_answers_all_at_full_coverage():
    from gsmv.metrics import selective_curve

    rng = np.random.default_rng(0)
    conf, value = rng.random(50), (rng.random(50) < 0.5).astype(float)
    v, lo, hi = selective_curve(conf, value, [0.2, 1.0], 300, 0)
    assert v[1] == pytest.approx(value.mean())
    assert (lo <= v + 1e-12).all() and (v <= hi + 1e-12).all()


def test_reliability_bins_match_the_calibration_error():
    from gsmv.metrics import expected_calibration_error, reliability_bins

    probs = np.array([0.05, 0.15, 0.12, 0.95, 0.91, 1.0])
    labels = np.array([0, 1, 0, 1, 1, 0])
    bins = reliability_bins(probs, labels)
    assert [b["count"] for b in bins] == [1, 2, 3]
    assert bins[1]["confidence"] == pytest.approx(0.135) and bins[1]["accuracy"] == pytest.approx(0.5)
    ece = sum(b["count"] / 6 * abs(b["accuracy"] - b["confidence"]) for b in bins)
    assert expected_calibration_error(probs, labels) == pytest.approx(ece, abs=1e-6)
