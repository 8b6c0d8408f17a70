"""Evaluation: the estimators against brute force, the run-folder reader and its errors, the paper's numbers."""

from __future__ import annotations

import itertools
import json
import math
from fractions import Fraction

import numpy as np
import pytest
from report.fake_run import write_fake_run

from gsmv import evaluate as E
from gsmv.artifacts import RunPaths, atomic_write_text, list_shards
from gsmv.config import RunConfig
from gsmv.data.tasks import data_dir
from gsmv.data.tasks import load_split
from gsmv.errors import GsmvError


def approx(x):
    """Results are rounded to 1e-6."""
    return pytest.approx(x, abs=1e-6)


# The paper's released per-problem results, found like the GSM8K data ($GSMV_DATA_DIR or ../shared/data/gsm8k).
REFERENCE = data_dir(RunConfig()) / "example_model_solutions.jsonl"


# --------------------------------------------------------------------------- estimators vs brute force


def test_pass_at_k_matches_brute_force_enumeration():
    for n in range(1, 8):
        for c in range(n + 1):
            labels = [1] * c + [0] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(labels, k))
                want = sum(any(s) for s in subsets) / len(subsets)
                got = E.pass_at_k(n, np.array([c]), k)[0]
                assert got == pytest.approx(want, abs=1e-12), (n, c, k)


def test_pass_at_k_is_stable_for_large_n():
    n = 1000
    cs = np.array([0, 1, 5, 500, 999, 1000])
    for k in (1, 10, 100, 999):
        got = E.pass_at_k(n, cs, k)
        want = [1 - float(Fraction(math.comb(n - c, k), math.comb(n, k))) for c in cs]
        assert np.allclose(got, want, atol=1e-12)
        assert np.all((got >= 0) & (got <= 1))
    assert E.pass_at_k(n, np.array([3]), 1)[0] == pytest.approx(3 / n)


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
    got = E.best_of_n(scores, correct, ns)
    for p in range(P):
        for r, N in enumerate(ns):
            assert got[r, p] == pytest.approx(_best_of_n_brute(scores[p], correct[p], N), abs=1e-12)


def test_best_of_n_perfect_verifier_is_the_oracle_and_constant_is_mean_accuracy():
    rng = np.random.default_rng(2)
    P, n = 50, 16
    correct = rng.random((P, n)) < rng.random((P, 1))
    ns = E.power_grid(n)
    perfect = E.best_of_n(correct.astype(float) + 0.01 * rng.random((P, n)), correct, ns)
    for r, N in enumerate(ns):
        assert np.allclose(perfect[r], E.pass_at_k(n, correct.sum(1), N))
    constant = E.best_of_n(np.zeros((P, n)), correct, ns)
    assert np.allclose(constant, correct.mean(axis=1)[None, :])


def test_random_subset_average_agrees_with_exact_best_of_n():
    rng = np.random.default_rng(3)
    n, N = 10, 3
    scores = rng.random(n)
    correct = rng.random(n) < 0.5
    exact = E.best_of_n(scores[None], correct[None], [N])[0, 0]
    picks = [correct[sub[np.argmax(scores[sub])]] for sub in (rng.choice(n, N, replace=False) for _ in range(20000))]
    assert np.mean(picks) == pytest.approx(exact, abs=0.015)


# --------------------------------------------------------------------------- voting


def _codes(rows, correct_answer="7"):
    correct = np.array([[a == correct_answer for a in row] for row in rows])
    return E.encode_answers(rows, correct)


def test_majority_vote_counts_answers_and_ignores_missing_ones():
    rows = [
        ["7", "3", "7", None],  # 7 wins 2-1
        ["3", None, None, "7"],  # tie 1-1: the answer seen first (3) wins
        [None, None, None, None],  # nobody voted: wrong
        ["3", "7", "7", "3"],  # tie 2-2: 3 appears first
        [None, "7", None, None],  # one voter
        ["3", "3", "7", "7"][::-1],  # tie, 7 first
    ]
    codes, code_correct = _codes(rows)
    assert E.majority_vote(codes, code_correct).tolist() == [1, 0, 0, 0, 1, 1]


def test_majority_vote_at_n_equals_full_vote_and_is_seeded():
    rng = np.random.default_rng(4)
    P, n = 30, 8
    rows = [[str(v) if v < 4 else None for v in rng.integers(0, 6, n)] for _ in range(P)]
    codes, code_correct = E.encode_answers(rows, np.array([[a == "1" for a in r] for r in rows]))
    full = E.majority_vote(codes, code_correct)
    a = E.majority_vote_at(codes, code_correct, [1, 4, 8], 16, np.random.default_rng(0))
    b = E.majority_vote_at(codes, code_correct, [1, 4, 8], 16, np.random.default_rng(0))
    assert np.array_equal(a, b)
    assert np.array_equal(a[2], full)
    # One voter: each subset's vote is one random sample's answer, so the mean is about the sample accuracy.
    big = E.majority_vote_at(codes, code_correct, [1], 4000, np.random.default_rng(1))[0]
    assert np.allclose(big, code_correct[np.arange(P)[:, None], np.maximum(codes, 0)].__and__(codes >= 0).mean(1),
                       atol=0.05)


def test_top_k_voting_uses_the_verifier_ranking():
    # Ranked by score: s0 (answer 9), s1 (7), s2 (7), s3 (9), s4 (None); the reference is 7.
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5]])
    rows = [["9", "7", "7", "9", None]]
    correct = np.array([[a == "7" for a in rows[0]]])
    got = E.top_k_voting(scores, rows, correct, [1, 2, 3, 4, 5])[:, 0]
    # k=1: 9. k=2: tie 9/7 → 9 (ranked higher). k=3: 7 wins 2-1. k=4,5: tie 2-2 → 9.
    assert got.tolist() == [0, 0, 1, 0, 0]
    # Shuffling the samples (with their scores) changes nothing.
    perm = [3, 0, 4, 2, 1]
    got2 = E.top_k_voting(scores[:, perm], [[rows[0][i] for i in perm]], correct[:, perm], [1, 2, 3, 4, 5])[:, 0]
    assert got2.tolist() == got.tolist()


def test_top_k_voting_limits_are_best_of_n_and_majority_vote():
    rng = np.random.default_rng(5)
    P, n = 40, 12
    rows = [[str(v) for v in rng.integers(0, 4, n)] for _ in range(P)]
    correct = np.array([[a == "0" for a in r] for r in rows])
    scores = rng.random((P, n))
    top = E.top_k_voting(scores, rows, correct, [1, n])
    assert np.array_equal(top[0], E.best_of_n(scores, correct, [n])[0])
    codes, code_correct = E.encode_answers(rows, correct)
    assert np.array_equal(E.top_k_voting(np.zeros((P, n)), rows, correct, [n])[0],
                          E.majority_vote(codes, code_correct))


def test_auc_counts_pairs_and_ties_half():
    rng = np.random.default_rng(6)
    s = rng.integers(0, 5, 40).astype(float)
    y = rng.random(40) < 0.5
    pos, neg = s[y], s[~y]
    want = np.mean([(a > b) + 0.5 * (a == b) for a in pos for b in neg])
    assert E.auc(s, y) == pytest.approx(want)
    assert E.auc(s, np.ones(40, bool)) is None
    assert E.auc_within(np.array([[1.0, 0.0], [0.0, 1.0], [1, 2]]), np.array([[1, 0], [1, 0], [1, 1]])) == 0.5


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_estimate_and_shrinks_with_more_problems():
    rng = np.random.default_rng(7)
    widths = []
    for P in (100, 1600):
        v = (rng.random((3, P)) < np.array([[0.2], [0.5], [0.9]])).astype(float)
        lo, hi = E.bootstrap_ci(v, 1000, seed=0)
        mean = v.mean(1)
        assert np.all(lo <= mean) and np.all(mean <= hi)
        assert np.all(hi - lo > 0)
        widths.append(hi - lo)
    assert np.all(widths[1] < widths[0] / 2)  # about 1/sqrt(16) = 1/4
    ones = np.ones((1, 50))
    assert E.bootstrap_ci(ones, 200, 0)[0][0] == 1.0 == E.bootstrap_ci(ones, 200, 0)[1][0]
    a = E.bootstrap_ci(v, 300, seed=3)
    b = E.bootstrap_ci(v, 300, seed=3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


# --------------------------------------------------------------------------- a run folder


@pytest.fixture
def cfg(tiny_cfg):
    tiny_cfg.data.test_limit = 12
    tiny_cfg.evaluate.bootstrap = 200
    return tiny_cfg


def _design(P=12, n=8, seed=0):
    rng = np.random.default_rng(seed)
    correct = rng.random((P, n)) < np.linspace(0.0, 0.9, P)[:, None]
    correct[0] = False  # one problem nobody solves
    scores = rng.random((P, n)).astype(np.float32)
    return correct, scores


def test_main_writes_results_json_with_the_documented_schema(cfg):
    correct, scores = _design()
    greedy = correct[:, 0].copy()
    write_fake_run(cfg, correct=correct, scores=scores, greedy=greedy)
    res = E.main(cfg)
    on_disk = json.loads(RunPaths(cfg.run_dir).results.read_text())
    assert on_disk == json.loads(json.dumps(res))
    assert res["n_problems"] == 12 and res["n_samples"] == 8 and res["kind"] == "run"
    m = res["metrics"]
    assert m["test@1"]["value"] == approx(greedy.mean())
    assert m["pass@1"]["value"] == approx(correct.mean())
    assert m["oracle"]["value"] == approx(correct.any(1).mean())
    # float32 scores as written: ranking must use the stored values
    want_best = E.best_of_n(scores.astype(np.float64), correct, [8])[0].mean()
    assert m["best_of_n"]["value"] == approx(want_best)
    for name in ("test@1", "pass@1", "majority_vote", "best_of_n", "oracle"):
        assert m[name]["ci_low"] <= m[name]["value"] <= m[name]["ci_high"], name
    assert 0 <= m["verifier_auc"]["value"] <= 1 and m["verifier_auc"]["ci_low"] is None
    for key, xs in (("pass_at_k", [1, 2, 4, 8]), ("best_of_n", [1, 2, 4, 8]), ("majority_vote", [1, 2, 4, 8]),
                    ("top_k_voting", [1, 2, 3, 5, 8])):
        cur = res["curves"][key]
        assert cur["x"] == xs
        assert len(cur["value"]) == len(cur["ci_low"]) == len(cur["ci_high"]) == len(xs)
    assert res["curves"]["best_of_n"]["value"][-1] == m["best_of_n"]["value"]
    assert res["curves"]["best_of_n"]["value"][0] == approx(correct.mean())
    assert res["diagnostics"]["answered"] == 1.0 and res["diagnostics"]["finished"] == 1.0
    table = E.format_table(res)
    assert f"{100 * greedy.mean():.1f}%" in table and "best-of-8" in table


def test_perfect_verifier_run_reaches_the_oracle(cfg):
    correct, _ = _design(seed=1)
    write_fake_run(cfg, correct=correct, scores=correct.astype(np.float32))
    res = E.main(cfg)
    assert res["metrics"]["best_of_n"]["value"] == res["metrics"]["oracle"]["value"]
    assert res["curves"]["best_of_n"]["value"] == res["curves"]["pass_at_k"]["value"]
    assert res["metrics"]["verifier_auc"]["value"] == 1.0


def test_no_greedy_samples_reports_test_at_1_absent(cfg):
    correct, scores = _design()
    write_fake_run(cfg, correct=correct, scores=scores, greedy=None)
    res = E.main(cfg)
    assert res["metrics"]["test@1"] is None
    assert "absent" in E.format_table(res)


def test_majority_vote_in_a_run_uses_normalized_answers(cfg):
    problems = load_split(cfg, "test")
    # Rewrite problem 0's answers: "1,000" and "1000.0" are the same answer and outvote "5".
    answers = [[str(p.answer), "x", "y"] for p in problems]
    answers[0] = ["5", "1,000", "1000.0"]
    correct = np.zeros((12, 3), dtype=bool)
    correct[0, 1:] = True
    write_fake_run(cfg, correct=correct, scores=np.zeros((12, 3), np.float32), answers=answers)
    res = E.main(cfg)
    assert res["metrics"]["majority_vote"]["value"] == approx(1 / 12)


# --------------------------------------------------------------------------- errors


def test_missing_scores_is_an_error_naming_the_folder(cfg):
    correct, _ = _design()
    write_fake_run(cfg, correct=correct, scores=None)
    with pytest.raises(GsmvError, match=r"scores/test"):
        E.main(cfg)


def test_mismatched_sample_counts_is_an_error_and_keeps_old_results(cfg):
    correct, scores = _design()
    write_fake_run(cfg, correct=correct, scores=scores)
    E.main(cfg)
    before = RunPaths(cfg.run_dir).results.read_text()
    # Scores for 6 samples per problem against 8 samples.
    other = cfg.run_dir.parent / "other"
    cfg2 = type(cfg)(**{**cfg.__dict__, "name": "other"})
    write_fake_run(cfg2, correct=correct[:, :6], scores=scores[:, :6])
    paths = RunPaths(cfg.run_dir)
    for p in list_shards(paths.scores("test")):
        p.unlink()
    for p in list_shards(RunPaths(other).scores("test")):
        p.rename(paths.scores("test") / p.name)
    with pytest.raises(GsmvError, match=r"scores/test: 72 scores for 96 samples"):
        E.main(cfg)
    assert RunPaths(cfg.run_dir).results.read_text() == before


def test_uneven_samples_per_problem_is_an_error(cfg):
    correct, scores = _design()
    write_fake_run(cfg, correct=correct, scores=scores)
    import pyarrow.parquet as pq

    shard = list_shards(RunPaths(cfg.run_dir).samples("test"))[0]
    t = pq.read_table(shard)
    pq.write_table(t.slice(1), shard)
    with pytest.raises(GsmvError, match=r"samples/test: problem test-\d+ has 7 samples, expected 8"):
        E.main(cfg)


def test_problem_not_in_split_is_an_error_naming_the_shard(cfg):
    correct, scores = _design()
    write_fake_run(cfg, correct=correct, scores=scores)
    cfg.data.test_limit = 10  # the samples hold problems 10 and 11, now outside the split
    with pytest.raises(GsmvError, match=r"samples/test/shard-0000\d\.parquet: problem_id 'test-0001[01]' is not in"):
        E.main(cfg)


def test_bad_score_values_and_columns_are_errors(cfg):
    correct, scores = _design()
    scores[3, 2] = np.nan
    write_fake_run(cfg, correct=correct, scores=scores)
    with pytest.raises(GsmvError, match=r"scores/test: score of problem test-00003 sample 2 is nan"):
        E.main(cfg)
    import pyarrow.parquet as pq

    shard = list_shards(RunPaths(cfg.run_dir).scores("test"))[0]
    pq.write_table(pq.read_table(shard).drop_columns(["score"]), shard)
    with pytest.raises(GsmvError, match=rf"{shard}: missing column\(s\) score"):
        E.main(cfg)


# --------------------------------------------------------------------------- the paper's released results


@pytest.mark.skipif(not REFERENCE.exists(), reason="example_model_solutions.jsonl not found")
def test_reference_reproduces_the_papers_numbers_exactly():
    res = E.evaluate_reference(REFERENCE)
    assert res["n_problems"] == 1319
    got = {m: round(100 * res["models"][m]["value"], 1) for m in E.REFERENCE_MODELS}
    assert got == {"6b_finetuning": 21.7, "6b_verification": 39.0, "175b_finetuning": 34.7,
                   "175b_verification": 56.3}
    for m in res["models"].values():
        assert m["ci_low"] < m["value"] < m["ci_high"] and m["ci_high"] - m["ci_low"] < 0.07
    table = E.format_table(res)
    assert "56.3%" in table and "21.7%" in table


def _ref_line(**over):
    rec = {"question": "q", "ground_truth": "A: 1"}
    rec.update({m: {"is_correct": True, "solution": "A: 1"} for m in E.REFERENCE_MODELS})
    rec.update(over)
    return json.dumps(rec)


def test_reference_bad_input_names_file_and_line(tmp_path):
    path = tmp_path / "ref.jsonl"
    atomic_write_text(path, _ref_line() + "\n{not json\n")
    with pytest.raises(GsmvError, match=rf"^{path}:2: invalid JSON"):
        E.evaluate_reference(path)
    bad = json.loads(_ref_line())
    del bad["175b_verification"]
    atomic_write_text(path, _ref_line() + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(GsmvError, match=rf"^{path}:3: missing key '175b_verification'"):
        E.evaluate_reference(path)
    atomic_write_text(path, _ref_line(**{"6b_finetuning": {"is_correct": "yes", "solution": ""}}) + "\n")
    with pytest.raises(GsmvError, match=rf"^{path}:1: '6b_finetuning.is_correct' must be true or false"):
        E.evaluate_reference(path)
    with pytest.raises(GsmvError, match="file not found"):
        E.evaluate_reference(tmp_path / "nope.jsonl")
    atomic_write_text(path, _ref_line() + "\n" + _ref_line(**{"6b_finetuning": {"is_correct": False}}) + "\n")
    assert E.evaluate_reference(path, bootstrap=50)["models"]["6b_finetuning"]["value"] == 0.5
