"""gsmv.formatting: the one table of metric labels and the printed numbers."""

from __future__ import annotations

from gsmv.formatting import METRIC_LABELS, SHORT_LABELS, fmt_metric, label, pct


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
