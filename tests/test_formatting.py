"""gsmv.formatting: the one table of metric labels and the printed numbers."""

from __future__ import annotations

from gsmv.formatting import METRIC_LABELS, SHORT_LABELS, fmt_metric, format_table, label, pct


def test_labels_fill_in_the_sample_count_or_say_n():
    assert label("best_of_n", 100) == "verifier best-of-100"
    assert label("best_of_n") == "verifier best-of-N"
    assert label("majority_vote", 8) == "majority vote over 8"
    assert label("best_of_n", 8, short=True) == "best-of-8"
    assert label("verifier_auc_within", short=True) == METRIC_LABELS["verifier_auc_within"]  # no short one
    assert label("maj@8", 8) == "maj@8"  # unknown names as given
    assert set(SHORT_LABELS) <= set(METRIC_LABELS)


def test_numbers_print_as_percent_except_aucs():
    assert pct(None) == "-" and pct(0.1234) == "12.3"
    assert fmt_metric("pass@1", {"value": 0.5, "ci_low": 0.25, "ci_high": 0.75}) == ("50.0%", "[25.0, 75.0]")
    assert fmt_metric("verifier_auc", {"value": 0.81234, "ci_low": None, "ci_high": None}) == ("0.812", "")
    assert fmt_metric("test@1", None) == ("absent", "")


def _results(metrics: dict) -> dict:
    return {"kind": "run", "run": "r", "split": "test", "n_problems": 4, "n_samples": 8,
            "bootstrap": {"resamples": 10}, "metrics": metrics, "curves": {}}


def test_lm_eval_rows_say_they_grade_gsmvs_decoding_not_the_harness_run():
    # Issue 46: gsmv's calculator-assisted greedy sample under the harness's rules is not the harness's number.
    for key in ("test@1_lm_eval_strict", "test@1_lm_eval_flexible"):
        assert "lm-eval" in label(key) and "on gsmv decoding" in label(key)
    metric = {"value": 0.05, "ci_low": 0.0, "ci_high": 0.1}
    table = format_table(_results({"test@1": metric, "test@1_lm_eval_strict": metric,
                                   "test@1_lm_eval_flexible": metric}))
    assert "not the harness's own run" in table and "decodes without the calculator" in table
    rows = [line for line in table.splitlines() if "5.0%" in line]
    assert len(rows) == 3 and len({line.index("5.0%") for line in rows}) == 1  # one column for every label
    assert "harness" not in format_table(_results({"test@1": metric}))  # no lm-eval rows: no note


def test_absent_aucs_say_why():
    why = "(no problem has both right and wrong samples)"
    assert fmt_metric("verifier_auc_within", None) == ("absent", why)
    assert fmt_metric("verifier_auc", {"value": None})[1].startswith("(no test sample is right")
    table = format_table(_results({"verifier_auc_within": None}))
    assert "absent  (no problem has both right and wrong samples)" in table


def test_the_table_prints_the_step_level_results_or_why_not():
    from gsmv.formatting import _steps_lines

    m = {"value": 0.3, "ci_low": 0.2, "ci_high": 0.4}
    block = {"f1": m, "acc_erroneous": m, "acc_correct": m, "erroneous": 5, "correct": 5}
    st = {"aggregates": {h: {"best_of_n": m} for h in ("last", "min")},
          "localization": {"threshold": 0.25, "all": {"verifier": block, "difficulty": block},
                           "balanced": {"verifier": block, "difficulty": block}},
          "step_auc": {"pooled": 0.8, "within": 0.7, "first_step_within": None}}
    text = "\n".join(_steps_lines(st))
    assert "last:30.0  min:30.0" in text and "F1 balanced: 30.0 [20.0, 40.0], difficulty only 30.0" in text
    assert "threshold 0.2500 (val)" in text and "within a problem 0.700" in text
    assert _steps_lines({"note": "no per-token values"}) == ["  step by step: no per-token values"]
    assert _steps_lines({}) == []
