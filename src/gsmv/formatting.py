"""How results are named and printed: the one table of metric labels, number formats and the text table.

Shared by evaluate (`gsmv evaluate` prints format_table), the report (report.md, its comparison of runs and
the plots' legends) and the CLI. Labels may hold "{n}", the samples per problem; label() fills it in (or
writes "N" when no count is given, for curves over N).
"""

from __future__ import annotations

# The long label of each metric of results.json["metrics"] and of each curve of results.json["curves"].
METRIC_LABELS = {
    "test@1": "test@1 (greedy)",
    "pass@1": "pass@1 (one sample)",
    "majority_vote": "majority vote over {n}",
    "best_of_n": "verifier best-of-{n}",
    "weighted_vote": "score-weighted vote over {n}",
    "oracle": "coverage (oracle pass@{n})",
    "verifier_auc": "verifier AUC (pooled)",
    "verifier_auc_within": "verifier AUC (within problem)",
    # lm-evaluation-harness's gsm8k grading applied to gsmv's own calculator-assisted greedy sample: not the
    # number the harness prints, which decodes without the calculator (issue 46: 5.0% here, 0.0% there).
    "test@1_lm_eval_strict": "test@1, lm-eval strict rules on gsmv decoding",
    "test@1_lm_eval_flexible": "test@1, lm-eval flexible rules on gsmv decoding",
    "pass@1_strict": "pass@1, right steps too",
    "best_of_n_strict": "best-of-{n}, right steps too",
    "false_positive_rate": "right answer, wrong step",
    "best_of_n_false_positive": "best-of-{n} right, wrong step",
    "pass_at_k": "pass@{n}",
    "top_k_voting": "top-k voting",
}
# Short labels, where space is tight: the comparison table's columns, the text table's curve lines, legends
# that prefix a run's name.
SHORT_LABELS = {
    "test@1": "test@1",
    "pass@1": "pass@1",
    "majority_vote": "majority vote",
    "best_of_n": "best-of-{n}",
    "oracle": "coverage",
    "verifier_auc": "AUC",
    "pass_at_k": "pass@k",
    "top_k_voting": "top-k voting",
    "weighted_vote": "weighted vote",
}
# The paper's released results (gsmv.evaluate.REFERENCE_MODELS).
REFERENCE_LABELS = {
    "6b_finetuning": "paper 6B finetuning (test@1)",
    "6b_verification": "paper 6B verification (best-of-100)",
    "175b_finetuning": "paper 175B finetuning (test@1)",
    "175b_verification": "paper 175B verification (best-of-100)",
}
# Metrics that need step-level truth: left out of the table when null (tasks without it).
STEP_METRICS = ("pass@1_strict", "best_of_n_strict", "false_positive_rate", "best_of_n_false_positive")
# Diagnostics that are not accuracies: printed as 0.xxx, not percent.
NOT_PERCENT = ("verifier_auc", "verifier_auc_within")
# Why a diagnostic can be null in results.json, printed after "absent" in the CI's place (a diagnostic has no CI):
# an AUC needs right and wrong samples to compare, which a weak generator (none right) or an easy task lacks.
ABSENT_WHY = {
    "verifier_auc": "no test sample is right, or none is wrong",
    "verifier_auc_within": "no problem has both right and wrong samples",
}
# Printed under the text table when the lm-eval rows are: what they are and are not.
LM_EVAL_NOTE = ("lm-eval rows: the harness's gsm8k grading rules on gsmv's calculator-assisted greedy "
                "sample; not the harness's own run, which decodes without the calculator")
# The text table's curve lines, in order.
TABLE_CURVES = ("best_of_n", "majority_vote", "weighted_vote", "pass_at_k", "top_k_voting")


def label(name: str, n: int | None = None, short: bool = False) -> str:
    """The metric's (or curve's) label with n samples per problem ("N" when n is None); unknown names as given."""
    table = SHORT_LABELS if short and name in SHORT_LABELS else METRIC_LABELS
    return table.get(name, name).replace("{n}", "N" if n is None else str(n))


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100.0 * x:.1f}"


def fmt_metric(name: str, m: dict | None) -> tuple[str, str]:
    """(value, CI) as printed: percent with one decimal for accuracies, 0.xxx for AUCs (absent ones say why)."""
    if m is None or m.get("value") is None:
        return "absent", f"({ABSENT_WHY[name]})" if name in ABSENT_WHY else ""
    if name in NOT_PERCENT:
        return f"{m['value']:.3f}", ""
    ci = "" if m.get("ci_low") is None else f"[{pct(m['ci_low'])}, {pct(m['ci_high'])}]"
    return f"{pct(m['value'])}%", ci


def _reference_table(results: dict) -> str:
    lines = [f"paper reference: {results['source']} ({results['n_problems']} problems, 95% bootstrap CI)"]
    for m, metric in results["models"].items():
        v, ci = fmt_metric(m, metric)
        lines.append(f"  {REFERENCE_LABELS.get(m, m):<40} {v:>7}  {ci}")
    return "\n".join(lines)


def _budget_lines(b: dict) -> list[str]:
    lines = [f"  equal budget ({b['problems']} problems; accuracy at generated tokens per problem):"]
    for name, cur in b["strategies"].items():
        pts = "  ".join(f"{cur['param']}={x} {t:.0f}tok:{pct(v)}"
                        for x, t, v in zip(cur["x"], cur["tokens"], cur["value"], strict=True))
        lines.append(f"    {name:<13} {pts}")
    return lines


def format_table(results: dict) -> str:
    """A compact text table of a results.json (or of gsmv.evaluate.evaluate_reference's dict)."""
    if results.get("kind") == "reference":
        return _reference_table(results)
    n = results["n_samples"]
    lines = [f"{results.get('run', 'run')}: {results['split']}, {results['n_problems']} problems x {n} samples "
             f"(95% bootstrap CI, {results['bootstrap']['resamples']} resamples)"]
    rows = []
    for name, metric in results["metrics"].items():
        if (name in STEP_METRICS or name.startswith("test@1_lm_eval")) and metric is None:  # not measurable here
            continue
        if name.startswith("maj@"):  # the field's name of majority_vote, printed on that line
            continue
        rows.append((name, label(name, n) + (f" (maj@{n})" if name == "majority_vote" else ""), metric))
    width = max([32, *(len(text) for _, text, _ in rows)])
    for name, text, metric in rows:
        v, ci = fmt_metric(name, metric)
        lines.append(f"  {text:<{width}} {v:>7}  {ci}")
    if any(name.startswith("test@1_lm_eval") for name, _, _ in rows):
        lines.append(f"  ({LM_EVAL_NOTE})")
    for key in TABLE_CURVES:
        cur = results["curves"].get(key)
        if cur:
            pts = "  ".join(f"{x}:{pct(v)}" for x, v in zip(cur["x"], cur["value"], strict=True))
            lines.append(f"  {label(key, short=True):<13} {pts}")
    lines += _steps_lines(results.get("steps") or {})
    if results.get("budget"):
        lines += _budget_lines(results["budget"])
    return "\n".join(lines)


def _steps_lines(st: dict) -> list[str]:
    """Step by step (gsmv.steps): best-of-N under each aggregation, localization F1 beside its difficulty-only
    baseline, step AUC."""
    if "aggregates" not in st:
        return [f"  step by step: {st['note']}"] if st.get("note") else []
    aggs = "  ".join(f"{how}:{pct(a['best_of_n']['value'])}" for how, a in st["aggregates"].items())
    lines = [f"  {'best-of-N by':<13} {aggs}  (score.aggregate over step-end values)"]
    loc = st.get("localization")
    if loc:
        t = loc.get("threshold")
        for subset in ("all", "balanced"):
            v, d = loc[subset].get("verifier"), loc[subset].get("difficulty")
            if v is None:
                continue
            lines.append(f"  {'first error':<13} F1 {subset}: {pct(v['f1']['value'])} "
                         f"[{pct(v['f1']['ci_low'])}, {pct(v['f1']['ci_high'])}], difficulty only "
                         f"{pct(d['f1']['value'])} ({v['erroneous']} erroneous / {v['correct']} correct)")
        sa = st.get("step_auc") or {}
        fmt = {k: "-" if x is None else f"{x:.3f}" for k, x in sa.items()}
        lines.append(f"  {'':<13} threshold {'-' if t is None else f'{t:.4f}'} (val); step AUC pooled "
                     f"{fmt.get('pooled')}, within a problem {fmt.get('within')}")
    return lines
