"""Step-level evaluation (gsmv.steps): step ends, aggregations, ProcessBench localization and its threshold,
the balanced subset, step AUC and score-weighted voting, against brute force on small hand-made cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gsmv import steps as S
from gsmv.errors import GsmvError
from gsmv.metrics import encode_answers


def test_step_ends_find_the_token_that_closes_each_annotation():
    pieces = ["Tom", " has", " <<", "3", "*", "4", "=", "12", ">>", "12", ".", "\n", "<<12", "+1=1", "3>", ">13", "\n",
              "####", " 13"]
    ends, results = S.step_ends(pieces)
    assert ends == [8, 15] and results == ["12", "13"]  # the second `>>` is split across two tokens
    assert S.step_ends(["no", " steps"]) == ([], [])


def test_sample_steps_read_values_at_step_ends_and_judge_them_by_the_reference():
    pieces = [["<<", "2+2=4", ">>", "4", " <<", "4*3=99", ">>", "99"]]
    values = [[0.1, 0.2, 0.9, 0.3, 0.4, 0.5, 0.6, 0.7]]
    st = S.sample_steps(np.array([0]), np.array([False]), np.array([0.7]), pieces, values, [frozenset({"4", "12"})])
    assert st.values[0].tolist() == [0.9, 0.6] and st.ok[0].tolist() == [True, False]
    # values cut short (an input past max_len) keep only the steps that have a value
    st = S.sample_steps(np.array([0]), np.array([False]), np.array([0.7]), pieces, [values[0][:5]], None)
    assert st.values[0].tolist() == [0.9] and st.ok is None


def test_aggregations_over_step_values_and_the_final_value():
    vals = [np.array([0.5, 0.2]), np.zeros(0), np.array([1.5, -0.5])]
    final = np.array([0.8, 0.4, 0.9])
    assert S.aggregate(vals, final, "last").tolist() == [0.8, 0.4, 0.9]
    assert S.aggregate(vals, final, "min").tolist() == [0.2, 0.4, -0.5]
    assert S.aggregate(vals, final, "mean") == pytest.approx([0.5, 0.4, 1.9 / 3])
    # product clips to [0, 1]: an MSE head's values can leave it
    assert S.aggregate(vals, final, "product") == pytest.approx([0.08, 0.4, 0.0])
    with pytest.raises(GsmvError, match="score.aggregate"):
        S.aggregate(vals, final, "max")


def _brute_f1(values, labels, t):
    preds = [next((k for k, v in enumerate(vs) if v < t), -1) for vs in values]
    err = [p == lab for p, lab in zip(preds, labels, strict=True) if lab >= 0]
    cor = [p == -1 for p, lab in zip(preds, labels, strict=True) if lab == -1]
    a, b = np.mean(err), np.mean(cor)
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def _random_case(rng, S_=60):
    values, ok, correct = [], [], []
    for _ in range(S_):
        k = int(rng.integers(0, 5))
        # values on a coarse grid: ties between samples and steps
        values.append(np.round(rng.random(k), 1))
        ok.append(rng.random(k) < 0.7)
        correct.append(bool(rng.random() < 0.5))
    return values, ok, np.array(correct)


def test_labels_separate_erroneous_correct_and_right_steps_with_a_wrong_answer():
    ok = [np.array([True, False, False]), np.array([True, True]), np.array([True]), np.zeros(0, bool), np.zeros(0, bool)]
    correct = np.array([True, True, False, True, False])
    # a right answer by a wrong step is erroneous (its first wrong step); right steps with a wrong answer
    # (by luck or a bad last line) and no step with a wrong answer are unlabelled (-2)
    assert S.first_error_labels(ok, correct).tolist() == [1, -1, -2, -1, -2]
    vals = [np.array([0.9, 0.1, 0.8]), np.array([0.9, 0.9]), np.array([0.2]), np.zeros(0), np.zeros(0)]
    assert S.predict_first_error(vals, 0.5).tolist() == [1, -1, 0, -1, -1]


@pytest.mark.parametrize("seed", range(6))
def test_chosen_threshold_maximises_f1_against_a_brute_force_sweep(seed):
    rng = np.random.default_rng(seed)
    values, ok, correct = _random_case(rng)
    labels = S.first_error_labels(ok, correct)
    t = S.choose_threshold(values, labels)
    grid = np.concatenate([np.arange(-0.05, 1.2, 0.05), [np.inf]])  # every gap between grid values 0.0..1.0
    best = max(_brute_f1(values, labels, g) for g in grid)
    assert _brute_f1(values, labels, t) == pytest.approx(best)
    # the pooled counts give the same F1
    counts = S.hit_counts(labels, S.predict_first_error(values, t), np.zeros(len(labels), int), 1).sum(axis=1)
    assert S.f1_of(counts)[0] == pytest.approx(best)


def test_threshold_without_both_kinds_predicts_the_first_step():
    assert S.choose_threshold([np.array([0.3])], np.array([0])) == np.inf


def test_balanced_subset_takes_as_many_correct_as_erroneous_from_mixed_problems():
    labels = np.array([0, -1, -1, 2, -2, -1, 1, 1, 0, -1])
    problem = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2, 3])
    order = np.array([5, 4, 3, 2, 1, 0, 1, 2, 0, 0])  # sample indices: the first ones are kept
    keep = S.balanced_subset(labels, problem, order)
    # problem 0: 2 erroneous (rows 0, 3), 2 correct (rows 1, 2); problem 1: 1 correct (5), first erroneous by
    # index (6); problems 2 and 3 have one kind only
    assert np.flatnonzero(keep).tolist() == [0, 1, 2, 3, 5, 6]


def test_difficulty_values_give_every_step_its_problems_mean_score():
    st = S.SampleSteps(np.array([0, 0, 1]), np.array([True, False, True]), np.array([0.2, 0.6, 0.9]),
                       [np.array([0.1, 0.1]), np.zeros(0), np.array([0.5])], None)
    assert [v.tolist() for v in S.difficulty_values(st)] == [[0.4, 0.4], [], [0.9]]


def test_step_auc_reads_prefix_truth():
    st = S.SampleSteps(np.array([0, 0]), np.array([True, False]), np.array([0.9, 0.1]),
                       [np.array([0.9, 0.8]), np.array([0.7, 0.1, 0.05])],
                       [np.array([True, True]), np.array([True, False, True])])
    got = S.step_auc(st)
    # prefixes right: 0.9, 0.8, 0.7; wrong: 0.1 and 0.05 (the third step is right but follows a wrong one)
    assert got["pooled"] == 1.0 and got["within"] == 1.0
    assert got["first_step_within"] is None  # both first steps are right


def _brute_weighted(scores, codes, correct_codes, N):
    """Expected correctness of the weighted vote over every N-subset (ties split)."""
    n = len(scores)
    total = 0.0
    subsets = list(itertools.combinations(range(n), N))
    for sub in subsets:
        sums: dict[int, float] = {}
        for j in sub:
            if codes[j] >= 0:
                sums[codes[j]] = sums.get(codes[j], 0.0) + max(scores[j], 0.0)
        if not sums:
            continue
        top = max(sums.values())
        lead = [a for a, s in sums.items() if s == top]
        total += sum(a in correct_codes for a in lead) / len(lead)
    return total / len(subsets)


def test_weighted_vote_is_exact_at_n_and_matches_enumeration_below():
    rng = np.random.default_rng(0)
    P, n = 5, 7
    answers = [[str(x) if x < 3 else None for x in rng.integers(0, 4, n)] for _ in range(P)]
    correct = np.array([[a == "0" for a in row] for row in answers])
    scores = np.round(rng.random((P, n)), 1)  # ties in score, and a tie of two answers' sums is possible
    scores[0] = 0.5  # one constant problem: weighted vote is majority vote
    codes, code_correct = encode_answers(answers, correct)
    ns = [1, 2, 4, 7]
    got, se = S.weighted_vote_at(scores, codes, code_correct, ns, subsets=20000, seed=1)
    for p in range(P):
        right = {int(c) for c in np.flatnonzero(code_correct[p])}
        for r, N in enumerate(ns):
            want = _brute_weighted(scores[p], codes[p], right, N)
            if N == n:
                assert got[r, p] == pytest.approx(want, abs=1e-12)
            else:
                assert got[r, p] == pytest.approx(want, abs=0.02)
    assert 0 < se < 0.01


def test_weighted_vote_ignores_unanswered_samples_and_clips_negative_scores():
    codes = np.array([[0, 1, 1, -1]])
    code_correct = np.array([[True, False]])
    got, _ = S.weighted_vote_at(np.array([[0.9, 0.5, -3.0, 5.0]]), codes, code_correct, [4])
    assert got[0, 0] == 1.0  # 0.9 against 0.5 + 0 (clipped); the unanswered sample's 5.0 votes for nobody
