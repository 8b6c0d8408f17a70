"""The report stage: plots/*.png, report.md (tables + plots) and report.html (the sample viewer).

Reads run_dir/results.json (written by the evaluate stage, which the pipeline runs first), the test
samples and scores (for the viewer and the score histogram, through gsmv.run_data), metrics.jsonl (training curves),
the paper's released results (a reference row, when example_model_solutions.jsonl is found next
to the GSM8K data), and the results of the runs in cfg.report.compare (ablations).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gsmv.artifacts import RunPaths, atomic_write_text, read_json, read_metrics
from gsmv.config import RunConfig
from gsmv.data.tasks import data_dir
from gsmv.errors import GsmvError
from gsmv.formatting import REFERENCE_LABELS, fmt_metric, label, pct

log = logging.getLogger(__name__)

REFERENCE_FILE = "example_model_solutions.jsonl"
# The metrics of the results table and of the comparison of runs, in order.
HEADLINE = ("test@1", "pass@1", "majority_vote", "best_of_n", "oracle", "verifier_auc")


def _cell(name: str, metric: dict | None, ci: bool = True) -> str:
    v, c = fmt_metric(name, metric)
    return f"{v} {c}".strip() if ci else v


def _run_summary(run_dir: Path) -> dict[str, Any]:
    """What distinguishes a run in a comparison: its name and verifier settings, from its config.yaml."""
    from omegaconf import OmegaConf

    out: dict[str, Any] = {"name": run_dir.name}
    cfg_path = RunPaths(run_dir).config
    if cfg_path.exists():
        try:
            c = OmegaConf.to_container(OmegaConf.load(cfg_path))
        except Exception:  # noqa: BLE001 - a bad config.yaml only loses the labels
            c = {}
        if isinstance(c, dict):
            out["name"] = c.get("name", run_dir.name)
            v = c.get("verifier") or {}
            out["level"] = v.get("level")
            out["lm_weight"] = v.get("lm_weight")
            out["dropout"] = v.get("dropout")
            out["model"] = (c.get("model") or {}).get("name")
    # The generator's training-set size, from its own finetune stage (absent when it was linked from another run).
    starts = [r for r in read_metrics(RunPaths(run_dir).metrics, "finetune") if r.get("event") == "start"]
    out["train_examples"] = starts[-1].get("examples") if starts else None
    return out


def _compare(cfg: RunConfig, results: dict) -> dict[str, tuple[dict, dict]]:
    """label → (run summary, results) for this run and every run in cfg.report.compare."""
    runs = {cfg.name: (_run_summary(cfg.run_dir), results)}
    for folder in cfg.report.compare:
        p = RunPaths(folder)
        if not p.results.exists():
            raise GsmvError(f"{p.results}: file not found (report.compare lists {folder}; run `gsmv evaluate` "
                            "for that run first)")
        res = read_json(p.results)
        if not isinstance(res, dict) or "curves" not in res or "metrics" not in res:
            raise GsmvError(f"{p.results}: not a gsmv results.json (no 'metrics' and 'curves')")
        summary = _run_summary(Path(folder))
        label = summary["name"]
        while label in runs:
            label += "'"
        runs[label] = (summary, res)
    return runs


def train_size_points(runs: dict[str, tuple[dict, dict]]) -> dict[int, dict]:
    """Training-set size → results, for compared runs that trained their own generator on different numbers
    of problems (the paper's Fig. 5); empty unless there are at least two sizes."""
    sizes: dict[int, dict] = {}
    for summary, res in runs.values():
        n = summary.get("train_examples")
        if isinstance(n, int) and n > 0:
            sizes.setdefault(n, res)
    return sizes if len(sizes) > 1 else {}


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _curve_table(results: dict, keys: list[str], xname: str) -> str:
    curves = results["curves"]
    xs = sorted({x for k in keys if k in curves for x in curves[k]["x"]})
    rows = []
    for x in xs:
        row = [str(x)]
        for k in keys:
            cur = curves.get(k)
            if cur and x in cur["x"]:
                i = cur["x"].index(x)
                row.append(f"{pct(cur['value'][i])} [{pct(cur['ci_low'][i])}, {pct(cur['ci_high'][i])}]")
            else:
                row.append("")
        rows.append(row)
    return _md_table([xname, *[label(k) for k in keys]], rows)


def _results_section(cfg: RunConfig, results: dict, reference: dict | None) -> list[str]:
    n = results["n_samples"]
    b = results["bootstrap"]
    lines = [
        f"# gsmv report: {cfg.name}",
        "",
        f"Generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}. Model `{cfg.model.name}`; verifier "
        f"{cfg.verifier.level}-level, LM loss weight {cfg.verifier.lm_weight}, dropout {cfg.verifier.dropout}. "
        f"Test split: {results['n_problems']} problems, {n} samples each (T={cfg.sample.temperature}). "
        f"Accuracies are % of test problems; brackets are 95% bootstrap confidence intervals over problems "
        f"({b['resamples']} resamples, seed {b['seed']}).",
        "",
        "## Results",
        "",
    ]
    rows = [[label(k, n), *fmt_metric(k, results["metrics"].get(k))] for k in (*HEADLINE, "verifier_auc_within")]
    lines += [_md_table(["method", "value", "95% CI"], rows), ""]
    if results["metrics"].get("test@1") is None:
        lines += ["test@1 is absent: this run has no greedy (T=0) samples (sample.greedy_test=false).", ""]
    if reference is not None:
        lines += [
            "Paper reference (Cobbe et al. 2021), recomputed with the same code from the released per-problem "
            f"results `{REFERENCE_FILE}` ({reference['n_problems']} problems; GPT-3 6B/175B, full GSM8K train):",
            "",
            _md_table(["paper", "accuracy", "95% CI"],
                      [[REFERENCE_LABELS.get(m, m), *fmt_metric(m, v)] for m, v in reference["models"].items()]),
            "",
        ]
    d = results.get("diagnostics", {})
    lines += [f"Samples with a final answer: {pct(d.get('answered'))}%; stopped at EOS: {pct(d.get('finished'))}%"
              + (f"; mean length {d['mean_tokens']:.1f} tokens." if d.get("mean_tokens") is not None else "."), ""]
    return lines


def _curves_section(results: dict, rel: dict[str, str | None]) -> list[str]:
    lines = ["## Accuracy vs number of samples (paper Fig. 7a)", ""]
    if rel.get("scaling"):
        lines += [f"![accuracy vs N]({rel['scaling']})", ""]
    lines += ["Verifier best-of-N and majority vote over N are exact expectations over all N-subsets of the samples "
              "(verifier score ties and vote ties are split evenly).", "",
              _curve_table(results, [k for k in ("best_of_n", "majority_vote", "weighted_vote", "pass_at_k")
                                     if k in results["curves"]], "N"), ""]
    if "top_k_voting" in results["curves"]:
        lines += ["## Verifier top-k voting (paper Fig. 7b)", ""]
        if rel.get("top_k"):
            lines += [f"![top-k voting]({rel['top_k']})", ""]
        lines += ["The k samples the verifier ranks highest vote on the final answer.", "",
                  _curve_table(results, ["top_k_voting"], "k"), ""]
    return lines


def _steps_section(results: dict) -> list[str]:
    """Step-level results (gsmv.steps): each aggregation's best-of-N and AUC, localization against its baselines."""
    st = results.get("steps") or {}
    n = results["n_samples"]
    lines = ["## Step by step", ""]
    if "aggregates" not in st:
        return lines + [f"Not measured: {st.get('note', 'no per-token values')}.", ""]
    lines += [f"Scores aggregated over the values at step ends and the final token (`score.aggregate`; this run "
              f"ranks by `{results.get('aggregate', 'last')}`):", ""]
    rows = [[how, _cell("best_of_n", a["best_of_n"]), "-" if a["auc"] is None else f"{a['auc']:.3f}",
             "-" if a["auc_within"] is None else f"{a['auc_within']:.3f}"] for how, a in st["aggregates"].items()]
    lines += [_md_table(["aggregation", f"best-of-{n} [95% CI]", "AUC (pooled)", "AUC (within problem)"], rows), ""]
    loc = st.get("localization")
    if loc:
        t = loc.get("threshold")
        if t is not None:
            how = f"threshold {t:.4f} chosen on val"
        elif loc.get("threshold_from"):
            how = "no threshold: val had no correct or no erroneous sample, so the verifier predicts the first step"
        else:
            how = "no val scores to choose a threshold on (the verifier row is left out)"
        lines += [f"First-error localization (ProcessBench's F1; {how}; {loc['unlabelled']} of {loc['samples']} samples with right steps but a wrong answer are "
                  f"left out; {pct(loc['first_step_share'])}% of erroneous samples go wrong at the first step):", ""]
        rows = []
        for subset in ("all", "balanced"):
            for name, m in loc[subset].items():
                rows.append([subset, name, _cell("f1", m["f1"]), _cell("a", m["acc_erroneous"]),
                             _cell("b", m["acc_correct"]), f"{m['erroneous']} / {m['correct']}"])
        lines += [_md_table(["samples", "predictor", "F1 [95% CI]", "erroneous acc.", "correct acc.",
                             "erroneous / correct"], rows), ""]
        sa = st.get("step_auc") or {}
        fmt = {k: "-" if v is None else f"{v:.3f}" for k, v in sa.items()}
        lines += [f"Step AUC (each step end's value against its prefix being right): pooled {fmt.get('pooled')}, "
                  f"within a problem {fmt.get('within')}; first step within a problem {fmt.get('first_step_within')}.",
                  ""]
    return lines


def _confidence_section(results: dict, rel: dict[str, str | None]) -> list[str]:
    sel = results.get("selective")
    if not sel:
        return []
    lines = ["## Confidence you can act on", ""]
    if rel.get("confidence"):
        lines += [f"![selective answering and calibration]({rel['confidence']})", ""]
    names = {"verifier": "verifier's mean value", "vote_share": "vote share"}
    header = ["signal", *[f"{100 * c:.0f}%" for c in sel["coverage"]]]
    rows = [[names.get(k, k), *[f"{pct(v)} [{pct(lo)}, {pct(hi)}]" for v, lo, hi in
                                zip(cur["value"], cur["ci_low"], cur["ci_high"], strict=True)]]
            for k, cur in sel["signals"].items()]
    lines += ["Accuracy of the majority-vote answer on the share of problems each signal is surest of:", "",
              _md_table(header, rows), ""]
    cal = results.get("calibration")
    if cal:
        lines += [f"Calibration of the verifier's score over all test samples: ECE {cal['ece']:.3f}, "
                  f"Brier {cal['brier']:.3f}.", ""]
    return lines


def _budget_section(bud: dict, rel: dict[str, str | None]) -> list[str]:
    lines = ["## Equal-budget comparison (value-guided search)", ""]
    if rel.get("budget"):
        lines += [f"![accuracy vs generated tokens]({rel['budget']})", ""]
    lines += [f"On the first {bud['problems']} test problems. Tokens: generated per problem (mean); for N "
              "samples, N times the mean sample length. Scored: tokens of the sequences the verifier scored "
              "(prompt + solution each).", ""]
    rows = []
    for name, cur in bud["strategies"].items():
        for i, x in enumerate(cur["x"]):
            sc = cur["scored_tokens"][i]
            rows.append([name, f"{cur['param']}={x}", f"{cur['tokens'][i]:.0f}", "" if sc is None else f"{sc:.0f}",
                         f"{pct(cur['value'][i])} [{pct(cur['ci_low'][i])}, {pct(cur['ci_high'][i])}]"])
    return lines + [_md_table(["strategy", "setting", "generated tokens", "scored tokens", "accuracy [95% CI]"], rows),
                    ""]


def _compare_section(runs: dict[str, tuple[dict, dict]], rel: dict[str, str | None]) -> list[str]:
    lines = ["## Comparison of runs", ""]
    if rel.get("compare"):
        lines += [f"![comparison]({rel['compare']})", ""]
    if rel.get("train_size"):
        lines += ["Finetuning (test@1) and verification (best-of-N) against the number of problems the generator "
                  "was trained on (paper Fig. 5):", "", f"![training-set size]({rel['train_size']})", ""]
    header = ["run", "train problems", "verifier", "LM weight", "dropout", "N",
              *[label(k, short=True) for k in HEADLINE]]
    rows = []
    for name, (s, res) in runs.items():
        rows.append([name, str(s.get("train_examples") or ""), str(s.get("level", "")),
                     str(s.get("lm_weight", "")), str(s.get("dropout", "")), str(res.get("n_samples", "")),
                     *[_cell(k, res["metrics"].get(k), ci=k in ("best_of_n", "test@1")) for k in HEADLINE]])
    return lines + [_md_table(header, rows), ""]


def build_markdown(cfg: RunConfig, results: dict, reference: dict | None, plots: dict[str, Path | None],
                   runs: dict[str, tuple[dict, dict]]) -> str:
    rel = {k: (f"plots/{p.name}" if p is not None else None) for k, p in plots.items()}
    lines = _results_section(cfg, results, reference) + _curves_section(results, rel)
    lines += _steps_section(results) + _confidence_section(results, rel)
    if results.get("budget"):
        lines += _budget_section(results["budget"], rel)
    if rel.get("scores"):
        lines += ["## Verifier scores", "", f"![score histogram]({rel['scores']})", ""]
    lines += ["## Training curves", ""]
    lines += [f"![training curves]({rel['training']})", ""] if rel.get("training") else \
        ["No training metrics in metrics.jsonl.", ""]
    if len(runs) > 1:
        lines += _compare_section(runs, rel)
    lines += ["## Sample viewer", "",
              f"[report.html](report.html): the first {cfg.report.html_problems or 'all'} test problems with their "
              "samples ranked by the verifier, per-token verifier values and filters.", ""]
    return "\n".join(lines)


def main(cfg: RunConfig) -> dict:
    """Write plots/*.png, report.md and report.html in cfg's run folder; return what was written."""
    from accelerate import PartialState

    from gsmv.evaluate import evaluate_reference
    from gsmv.report import html as html_mod
    from gsmv.report import plots
    from gsmv.run_data import load_run

    paths = RunPaths(cfg.run_dir)
    if not paths.results.exists():
        raise GsmvError(f"{paths.results}: file not found (run `gsmv evaluate` first)")
    results = read_json(paths.results)
    if not isinstance(results, dict) or results.get("kind") != "run":
        raise GsmvError(f"{paths.results}: not a gsmv results.json (rerun `gsmv evaluate`)")
    if not PartialState().is_main_process:
        return {}
    ref_path = data_dir(cfg) / REFERENCE_FILE
    reference = evaluate_reference(ref_path, cfg.evaluate.bootstrap, cfg.evaluate.seed) \
        if ref_path.exists() else None
    runs = _compare(cfg, results)
    sizes = train_size_points(runs)

    # The list columns (text, tokens, per-token values) are read later, for the samples report.html shows only.
    data = load_run(cfg, greedy_columns=["text"])
    if data.n != results["n_samples"] or len(data.problems) != results["n_problems"]:
        raise GsmvError(f"{paths.results}: made for {results['n_problems']} x {results['n_samples']} samples, "
                        f"the run folder has {len(data.problems)} x {data.n} (rerun `gsmv evaluate`)")
    written: dict[str, Path | None] = {
        "scaling": plots.plot_scaling(results, paths.plots / "scaling.png"),
        "top_k": plots.plot_top_k(results, paths.plots / "top_k.png") if "top_k_voting" in results["curves"]
        else None,
        "scores": plots.plot_score_hist(data.scores, data.correct, paths.plots / "scores.png")
        if data.scores is not None else None,
        "training": plots.plot_training(read_metrics(paths.metrics), paths.plots / "training.png"),
        "compare": plots.plot_compare({k: r for k, (_, r) in runs.items()}, paths.plots / "compare.png")
        if len(runs) > 1 else None,
        "budget": plots.plot_budget(results, paths.plots / "budget.png") if results.get("budget") else None,
        "train_size": plots.plot_train_size(sizes, paths.plots / "train_size.png") if sizes else None,
        "confidence": plots.plot_confidence(results, paths.plots / "confidence.png") if results.get("selective")
        else None,
    }
    atomic_write_text(paths.report_md, build_markdown(cfg, results, reference, written, runs))

    tokenizer = html_mod.load_tokenizer(cfg.run_dir)
    payload = html_mod.viewer_data(data, results, max_problems=cfg.report.html_problems,
                                   max_samples=cfg.report.html_samples, tokenizer=tokenizer, run_name=cfg.name)
    atomic_write_text(paths.report_html, html_mod.render_html(payload))
    return {"report_md": str(paths.report_md), "report_html": str(paths.report_html),
            "plots": len([p for p in written.values() if p is not None]),
            "html_problems": payload["shown_problems"], "token_colours": tokenizer is not None}
