"""The run's log, one line per stage at each end: what a stage starts doing, and how it ended (its time and
headline number: a loss, an accuracy, a coverage, a count).

    [finetune] started: fine-tune the generator on the train solutions (3 epochs)
    [finetune] done in 26.9 s: train loss 2.584, val loss 2.734

The end line is read from what the stage wrote in the run folder (metrics.jsonl, labels.json, done.json,
results.json), so a stage that resumed reports the whole of its work, not only the part done in this process.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from gsmv.artifacts import RunPaths, list_shards, parquet_rows, read_json_or_none
from gsmv.config import RunConfig
from gsmv.formatting import fmt_metric, label

SPLIT_OF = {"sample-train": "train", "sample-val": "val", "sample-test": "test", "sample-test-greedy": "test_greedy"}


def started(name: str, cfg: RunConfig) -> str:
    n = {"train": cfg.sample.n_train, "val": cfg.sample.n_val, "test": cfg.sample.n_test, "test_greedy": 1}
    what = {
        "finetune": f"fine-tune the generator on the train solutions ({_epochs(cfg.finetune.epochs)})",
        "label": "grade the train and val samples by final answer",
        "train-verifier": f"train the verifier on the labelled samples ({_epochs(cfg.verifier.epochs)})",
        "label-test": "grade the test samples by final answer",
        "score": "verifier values for every test sample",
        "score-val": "verifier values for every val sample (thresholds of the step-level evaluation)",
        "search": f"value-guided search on the test problems (beams {', '.join(map(str, cfg.search.beams))})",
        "evaluate": "test@1, pass@k, majority vote and best-of-N with bootstrap CIs",
        "report": "report.md, report.html and plots",
    }
    if name in SPLIT_OF:
        split = SPLIT_OF[name]
        kind = "one greedy solution" if split == "test_greedy" else f"{n[split]} solutions"
        return f"[{name}] started: {kind} per {split.removesuffix('_greedy')} problem"
    return f"[{name}] started: {what.get(name, name)}"


def _epochs(e: float) -> str:
    return f"{e:g} epoch" + ("" if e == 1 else "s")


def finished(name: str, secs: float, paths: RunPaths, summary: Any) -> str:
    """`[name] done in S s: headline`; the stage's own summary when the run folder says nothing better."""
    try:
        head = _HEADLINES[name](paths, summary) if name in _HEADLINES else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        # A log line is no reason to fail a stage that finished: fall back to what the stage returned.
        head = None
    head = head or short(summary)
    return f"[{name}] done in {secs:.1f} s" + (f": {head}" if head else "")


def short(summary: Any) -> str:
    if isinstance(summary, dict):
        items = [f"{k}={v}" for k, v in summary.items() if isinstance(v, int | float | str)]
        return ", ".join(items[:8])
    return "" if summary is None else str(summary)[:200]


# ---------------------------------------------------------------- each stage's headline

def _records(paths: RunPaths, stage: str) -> list[dict]:
    """The stage's records in metrics.jsonl, from its latest start on (a rerun appends, never rewrites)."""
    out: list[dict] = []
    needle = f'"stage": "{stage}"'
    if not paths.metrics.is_file():
        return out
    with paths.metrics.open() as f:
        for line in f:
            if needle not in line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:  # a line cut by a killed process
                continue
            if rec.get("event") == "start" and rec.get("step", 0) == 0:
                out = []
            out.append(rec)
    return out


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else None


def _losses(paths: RunPaths, stage: str, extra: tuple[tuple[str, str, bool], ...] = ()) -> str | None:
    recs = _records(paths, stage)
    train = next((r["loss"] for r in reversed(recs) if "loss" in r and "event" not in r), None)
    end = next((r for r in reversed(recs) if r.get("event") == "end"), {})
    parts = []
    for key, text, percent in (("train", "train loss", False), ("val_loss", "val loss", False), *extra):
        v = _num(train if key == "train" else end.get(key))
        if v is not None:
            parts.append(f"{text} {100 * v:.1f}%" if percent else f"{text} {v:.4g}")
    return ", ".join(parts) or None


def _finetune(paths: RunPaths, summary: Any) -> str | None:
    return _losses(paths, "finetune")


def _train_verifier(paths: RunPaths, summary: Any) -> str | None:
    return _losses(paths, "train-verifier", (("val_auc_within", "val AUC within problem", False),
                                             ("val_best_of_n", "val best-of-N", True)))


def _sample(name: str) -> Callable[[RunPaths, Any], str | None]:
    def headline(paths: RunPaths, summary: Any) -> str | None:
        info = read_json_or_none(paths.samples(SPLIT_OF[name]) / "done.json")
        if not isinstance(info, dict):
            return None
        problems, n = int(info["problems"]), int(info["samples_per_problem"])
        return f"{problems * n} samples ({problems} problems x {n}) in {paths.samples(SPLIT_OF[name])}"

    return headline


def _label(file: str) -> Callable[[RunPaths, Any], str | None]:
    def headline(paths: RunPaths, summary: Any) -> str | None:
        labels = read_json_or_none(paths.root / file)
        if not isinstance(labels, dict):
            return None
        return "; ".join(f"{split}: {100 * rec['accuracy']:.1f}% of {rec['samples']} samples right, coverage "
                         f"{100 * rec['coverage']:.1f}% of {rec['problems']} problems"
                         for split, rec in labels.items())

    return headline


def _score(paths: RunPaths, summary: Any, split: str = "test") -> str | None:
    shards = list_shards(paths.scores(split))
    rows = sum(parquet_rows(p) or 0 for p in shards)
    return f"{rows} {split} samples scored ({len(shards)} shards)"


def _search(paths: RunPaths, summary: Any) -> str | None:
    info = read_json_or_none(paths.search / "done.json")
    if not isinstance(info, dict):
        return None
    return f"{info['problems']} test problems searched with beams {', '.join(map(str, info['beams']))}"


def _evaluate(paths: RunPaths, summary: Any) -> str | None:
    res = read_json_or_none(paths.results)
    if not isinstance(res, dict) or res.get("kind") != "run":
        return None
    n, metrics = res["n_samples"], res["metrics"]
    parts = [f"{label(k, n, short=True)} {fmt_metric(k, metrics.get(k))[0]}"
             for k in ("test@1", "majority_vote", "best_of_n", "oracle")]
    return ", ".join(parts) + f" ({res['n_problems']} test problems)"


def _report(paths: RunPaths, summary: Any) -> str | None:
    if not isinstance(summary, dict) or "report_html" not in summary:
        return None
    return f"{summary['report_md']}, {summary['report_html']} ({summary['html_problems']} problems), " \
           f"{summary['plots']} plots"


_HEADLINES: dict[str, Callable[[RunPaths, Any], str | None]] = {
    "finetune": _finetune,
    **{name: _sample(name) for name in SPLIT_OF},
    "label": _label("labels.json"),
    "train-verifier": _train_verifier,
    "label-test": _label("labels-test.json"),
    "score": _score,
    "score-val": lambda paths, summary: _score(paths, summary, "val"),
    "search": _search,
    "evaluate": _evaluate,
    "report": _report,
}
