"""Evaluation: results.json, step-level truth, the equal-budget comparison, the paper's numbers (the run-folder
reader and its errors: test_run_data.py)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from report.fake_run import write_fake_run

from gsmv import evaluate as E
from gsmv.artifacts import RunPaths, atomic_write_text, list_shards
from gsmv.config import RunConfig
from gsmv.data.tasks import data_dir, get_task, load_split, reference_values
from gsmv.errors import GsmvError
from gsmv.formatting import format_table
from gsmv.run_data import load_run


def approx(x):
    """Results are rounded to 1e-6."""
    return pytest.approx(x, abs=1e-6)


# The paper's released per-problem results, found like the GSM8K data ($GSMV_DATA_DIR or ../shared/data/gsm8k).
REFERENCE = data_dir(RunConfig()) / "example_model_solutions.jsonl"


# The estimators themselves are tested in test_metrics.py.


def test_evaluate_reexports_the_shared_estimators():
    from gsmv import metrics

    for name in ("pass_at_k", "best_of_n", "majority_vote", "majority_vote_at", "top_k_voting", "auc", "bootstrap_ci"):
        assert getattr(E, name) is getattr(metrics, name)


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
    assert res["schema_version"] == 2 and "majority_subsets" not in res
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
    table = format_table(res)
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
    assert "absent" in format_table(res)


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


# --------------------------------------------------------------------------- step-level truth

WRONG_STEP = "First 1+1 = <<1+1=9999>>9999.\n"  # a step whose result is none of the reference's values


@pytest.fixture
def synth_cfg(cfg):
    """The synthetic task (it has step-level truth), 12 test problems."""
    cfg.data.source = "synth"
    cfg.data.synth.train_size, cfg.data.synth.test_size, cfg.data.val_size = 40, 12, 5
    assert get_task(cfg).step_truth
    return cfg


def _prepend_wrong_step(cfg, which: np.ndarray) -> None:
    """Give the samples where which[p, j] a wrong first step (their final answers stay as they were)."""
    index = {p.id: i for i, p in enumerate(load_split(cfg, "test"))}
    for shard in list_shards(RunPaths(cfg.run_dir).samples("test")):
        t = pq.read_table(shard)
        pids, idx, texts = (t.column(c).to_pylist() for c in ("problem_id", "sample_idx", "text"))
        new = [WRONG_STEP + x if which[index[p], j] else x for p, j, x in zip(pids, idx, texts, strict=True)]
        pq.write_table(t.set_column(t.schema.get_field_index("text"), "text", pa.array(new, pa.string())), shard)


def test_step_truth_metrics_count_right_answers_reached_by_wrong_steps(synth_cfg):
    problems = load_split(synth_cfg, "test")
    assert all("9999" not in reference_values(p) for p in problems)
    P, n = 12, 4
    correct = np.zeros((P, n), dtype=bool)
    correct[:, :2] = True  # samples 0 and 1 have the right answer
    correct[11] = False  # one problem nobody solves
    fp = np.zeros((P, n), dtype=bool)  # right answer, wrong step
    fp[:4, 0] = True  # problems 0-3: the top-ranked sample (0) is a false positive
    fp[4:6, 1] = True  # problems 4-5: a lower-ranked correct sample is one
    scores = np.tile(np.array([0.9, 0.8, 0.3, 0.2], np.float32), (P, 1))
    scores[6, :2] = 0.9  # problem 6: samples 0 and 1 tie for the top
    fp[6, 0] = True  # ... and one of the two is a false positive: half a false positive on top
    scores[7] = [0.1, 0.2, 0.9, 0.3]  # problem 7: the verifier ranks a wrong answer first
    fp[7, 0] = True
    write_fake_run(synth_cfg, correct=correct, scores=scores)
    _prepend_wrong_step(synth_cfg, fp)
    res = E.main(synth_cfg)
    m = res["metrics"]
    strict = correct & ~fp
    assert m["false_positive_rate"]["value"] == approx(fp.sum() / correct.sum())  # 8 of 22
    assert m["false_positive_rate"]["ci_low"] is None
    assert m["pass@1_strict"]["value"] == approx(strict.mean())
    # Best-of-4 picks sample 0 except in problem 6 (a tie of samples 0 and 1) and 7 (a wrong answer).
    top_strict = np.array([0, 0, 0, 0, 1, 1, 0.5, 0, 1, 1, 1, 0])
    assert m["best_of_n_strict"]["value"] == approx(top_strict.mean())
    assert m["best_of_n_strict"]["ci_low"] <= m["best_of_n_strict"]["value"] <= m["best_of_n_strict"]["ci_high"]
    assert m["best_of_n"]["value"] == approx(10 / 12)
    # Top-ranked correct in 10 problems; false positives among them: 4 whole + half of problem 6.
    assert m["best_of_n_false_positive"]["value"] == approx(4.5 / 10)
    table = format_table(res)
    assert "right steps too" in table and "best-of-4 right, wrong step" in table and "45.0%" in table


def test_step_truth_checks_each_text_against_its_own_problem(synth_cfg):
    """Step checks are computed once per distinct (problem, text): the same text must still be judged by each
    problem's own reference values (here right for problem 0, wrong for problem 1), and repeats of a text get
    the same verdict."""
    problems = load_split(synth_cfg, "test")
    assert not reference_values(problems[0]) <= reference_values(problems[1])
    P, n = 12, 4
    correct = np.zeros((P, n), dtype=bool)
    correct[:2] = True
    write_fake_run(synth_cfg, correct=correct, scores=np.zeros((P, n), np.float32))
    index = {q.id: i for i, q in enumerate(problems)}
    for shard in list_shards(RunPaths(synth_cfg.run_dir).samples("test")):
        t = pq.read_table(shard)
        pids, texts = t.column("problem_id").to_pylist(), t.column("text").to_pylist()
        new = [problems[0].solution if index[q] < 2 else x for q, x in zip(pids, texts, strict=True)]
        pq.write_table(t.set_column(t.schema.get_field_index("text"), "text", pa.array(new, pa.string())), shard)
    ok = E.step_truth(load_run(synth_cfg))
    assert ok[0].all()  # problem 0's own reference solution: every step right, all four samples
    assert not ok[1].any()  # the same text for problem 1: its steps are not problem 1's values
    assert not ok[2:].any()  # wrong answers are never step-true


def test_step_truth_metrics_are_null_without_step_truth_or_correct_samples(synth_cfg):
    correct, scores = _design()
    write_fake_run(synth_cfg, correct=np.zeros_like(correct), scores=scores)
    m = E.main(synth_cfg)["metrics"]
    assert m["false_positive_rate"] is None and m["best_of_n_false_positive"] is None  # no correct sample
    assert m["pass@1_strict"]["value"] == 0.0 == m["best_of_n_strict"]["value"]
    gsm8k = synth_cfg
    gsm8k.data.source, gsm8k.name = "local", "gsm8k"  # GSM8K: solutions may take other paths, steps are not checked
    write_fake_run(gsm8k, correct=correct, scores=scores)
    res = E.main(gsm8k)
    assert all(res["metrics"][k] is None for k in E.STEP_METRICS)
    assert "right steps too" not in format_table(res) and "wrong step" not in format_table(res)


# --------------------------------------------------------------------------- errors


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
    table = format_table(res)
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


def test_budget_compares_strategies_at_generated_tokens_on_the_searched_problems(cfg):
    import pyarrow as pa

    correct, scores = _design()
    write_fake_run(cfg, correct=correct, scores=scores, greedy=correct[:, 0].copy())
    data = load_run(cfg, greedy_columns=["n_tokens"])
    ntok = np.asarray(data.samples.column("n_tokens").to_numpy(), dtype=float)[data.sample_rows]
    ids = [p.id for p in data.problems]
    searched = [0, 3, 5]  # search ran on three problems, at K = 1 and 2
    rows = {"problem_id": [], "beams": [], "is_correct": [], "generated_tokens": [], "scored_tokens": []}
    for k in (1, 2):
        for p in searched:
            rows["problem_id"].append(ids[p])
            rows["beams"].append(k)
            rows["is_correct"].append(p == 5 or k == 2 and p == 3)
            rows["generated_tokens"].append(100 * k + p)
            rows["scored_tokens"].append(1000 * k)
    b = E.budget(data, pa.table(rows), prompt_lens={i: 7 for i in ids}, bootstrap=50)
    assert b["problems"] == 3
    s = b["strategies"]
    assert s["search"]["x"] == [1, 2] and s["search"]["param"] == "K"
    assert s["search"]["value"] == [approx(1 / 3), approx(2 / 3)]
    assert s["search"]["tokens"] == [pytest.approx(100 + 8 / 3, abs=0.01), pytest.approx(200 + 8 / 3, abs=0.01)]
    assert s["search"]["scored_tokens"] == [1000, 2000]
    # N samples cost N times the problem's mean sample length, averaged over the searched problems only.
    mean_len = ntok[searched].mean()
    i = s["best_of_n"]["x"].index(4)
    assert s["best_of_n"]["tokens"][i] == pytest.approx(4 * mean_len, abs=0.01)
    assert s["best_of_n"]["value"][i] == approx(E.best_of_n(scores[searched].astype(float), correct[searched],
                                                            [4])[0].mean())
    assert s["greedy"]["value"] == [approx(correct[searched, 0].mean())]
    finished = 1.0  # write_fake_run's samples all stop at EOS: the verifier also reads it
    assert s["best_of_n"]["scored_tokens"][i] == pytest.approx(4 * (7 + mean_len + finished), abs=0.01)
    with pytest.raises(E.GsmvError, match="has no result for 2 beams"):
        E.budget(data, pa.table({k: v[:4] for k, v in rows.items()}))


def test_results_carry_lm_eval_numbers_and_the_fields_maj_name(smoke_synth_run):
    from gsmv.config import load_config
    from gsmv.data.answers import lm_eval_matches
    from gsmv.data.tasks import load_split

    paths = RunPaths(smoke_synth_run)
    res = json.loads(paths.results.read_text())
    m = res["metrics"]
    assert m[f"maj@{res['n_samples']}"] == m["majority_vote"]
    refs = {p.id: p.solution for p in load_split(load_config(paths.config), "test")}
    rows = [r for s in list_shards(paths.samples("test_greedy")) for r in pq.read_table(s).to_pylist()]
    got = [lm_eval_matches(r["text"], refs[r["problem_id"]]) for r in rows]
    assert m["test@1_lm_eval_strict"]["value"] == pytest.approx(np.mean([g[0] for g in got]))
    assert m["test@1_lm_eval_flexible"]["value"] == pytest.approx(np.mean([g[1] for g in got]))


# --------------------------------------------------------------------------- step-level evaluation (gsmv.steps)


def test_a_synth_run_reports_localization_step_auc_and_every_aggregation(smoke_synth_run):
    res = json.loads(RunPaths(smoke_synth_run).results.read_text())
    st, n = res["steps"], res["n_samples"]
    assert res["aggregate"] == "last"
    assert set(st["aggregates"]) == {"last", "min", "product", "mean"}
    # the default aggregation is the score best-of-N always ranked by, with the same paired draws
    assert st["aggregates"]["last"]["best_of_n"] == res["metrics"]["best_of_n"]
    within = res["metrics"]["verifier_auc_within"]  # null when no problem has both labels (a tiny model)
    assert st["aggregates"]["last"]["auc_within"] == (within["value"] if within else None)
    loc = st["localization"]
    assert loc["threshold_from"] == "val" and RunPaths(smoke_synth_run).scores("val").is_dir()
    for subset in ("all", "balanced"):
        assert set(loc[subset]) == {"verifier", "difficulty", "first_step", "no_error"}
        # "no error" gets every correct sample and no erroneous one
        assert loc[subset]["no_error"]["acc_correct"]["value"] in (1.0, None)
        assert loc[subset]["no_error"]["acc_erroneous"]["value"] in (0.0, None)
    bal = loc["balanced"]["verifier"]
    assert bal["erroneous"] == bal["correct"]  # as many of each
    assert loc["all"]["verifier"]["erroneous"] + loc["all"]["verifier"]["correct"] + loc["unlabelled"] == res[
        "n_problems"] * n
    assert set(st["step_auc"]) == {"pooled", "within", "first_step_within"}
    wv = res["curves"]["weighted_vote"]
    assert wv["x"][-1] == n and res["metrics"]["weighted_vote"]["value"] == wv["value"][-1]
    assert res["diagnostics"]["weighted_vote_mc_se"] is not None


def test_score_aggregate_ranks_best_of_n_by_the_step_aggregate(smoke_synth_run, tmp_path):
    import shutil

    from gsmv.config import load_config

    run = tmp_path / "smoke-synth"
    shutil.copytree(smoke_synth_run, run)
    cfg = load_config(RunPaths(run).config, [f"out_dir={tmp_path}", "score.aggregate=min"])
    res = E.main(cfg)
    assert res["aggregate"] == "min"
    assert res["metrics"]["best_of_n"] == res["steps"]["aggregates"]["min"]["best_of_n"]


def test_an_aggregate_without_per_token_values_is_one_line_naming_the_key(cfg):
    P, n = 12, 4
    correct, scores = _design(P, n)
    write_fake_run(cfg, correct=correct, scores=scores)
    for shard in list_shards(RunPaths(cfg.run_dir).scores("test")):  # as score.keep_token_values=false writes
        t = pq.read_table(shard)
        empty = pa.array([[]] * t.num_rows, pa.list_(pa.float32()))
        pq.write_table(t.set_column(t.schema.get_field_index("token_values"), "token_values", empty), shard)
    res = E.main(cfg)  # the default aggregation needs none: results as before, the section says why not
    assert "keep_token_values" in res["steps"]["note"] and "aggregates" not in res["steps"]
    cfg.score.aggregate = "product"
    with pytest.raises(GsmvError, match=r"score.aggregate.*keep_token_values=true") as e:
        E.main(cfg)
    assert "\n" not in str(e.value)
