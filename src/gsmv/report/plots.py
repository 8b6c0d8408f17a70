"""PNG figures analogous to the paper's: scaling with N (Fig. 7a), top-k voting (Fig. 7b), training curves,
verifier score histograms and a comparison of runs (ablations, Fig. 6).

Figures are built with matplotlib's object API on the Agg canvas (no pyplot global state, no display).
Every function takes results.json-style dicts and returns the path it wrote.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gsmv.artifacts import atomic_write_bytes
from gsmv.formatting import label as metric_label

COLORS = {"best_of_n": "tab:green", "majority_vote": "tab:blue", "pass_at_k": "tab:gray", "top_k_voting": "tab:purple",
          "test@1": "tab:red", "weighted_vote": "tab:olive"}


def _figure(w: float = 6.4, h: float = 4.2, ncols: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=(w, h), dpi=110)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    # Atomic under a unique temp name: a reader never sees half a PNG, and two writers never share a temp file.
    atomic_write_bytes(path, buf.getvalue())
    return path


def _pct(xs: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if x is None else 100.0 * x for x in xs], dtype=float)


def _curve(ax, cur: Mapping, label: str, color: str | None, marker: str = "o", band: bool = True) -> None:
    x = np.asarray(cur["x"], dtype=float)
    ax.plot(x, _pct(cur["value"]), marker=marker, ms=3.5, lw=1.6, label=label, color=color)
    lo, hi = _pct(cur["ci_low"]), _pct(cur["ci_high"])
    if band and not np.isnan(lo).all():
        ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0)


def _log_x(ax, xs: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ticks = sorted(set(xs))
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.minorticks_off()


def _finish_accuracy(fig: Figure, ax, path: str | Path, *, xlabel: str, title: str, legend_size: int = 8) -> Path:
    """Labels, grid and legend of an accuracy plot (y: % of test problems solved), then save it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("% of test problems solved")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size)
    return _save(fig, path)


def _hline(ax, metric: Mapping | None, label: str, color: str) -> None:
    if metric and metric.get("value") is not None:
        ax.axhline(100.0 * metric["value"], ls="--", lw=1.1, color=color, label=label)


def plot_scaling(results: Mapping, path: str | Path) -> Path:
    """Accuracy vs number of samples N: verifier best-of-N, majority vote, pass@N (paper Fig. 7a)."""
    fig, (ax,) = _figure()
    curves = results["curves"]
    if "pass_at_k" in curves:
        _curve(ax, curves["pass_at_k"], f"{metric_label('pass_at_k')} (oracle)", COLORS["pass_at_k"], marker="s")
    if "best_of_n" in curves:
        _curve(ax, curves["best_of_n"], metric_label("best_of_n"), COLORS["best_of_n"])
    if "majority_vote" in curves:
        _curve(ax, curves["majority_vote"], metric_label("majority_vote"), COLORS["majority_vote"], marker="^")
    if "weighted_vote" in curves:
        _curve(ax, curves["weighted_vote"], metric_label("weighted_vote"), COLORS["weighted_vote"], marker="v")
    _hline(ax, results["metrics"].get("test@1"), metric_label("test@1"), COLORS["test@1"])
    _log_x(ax, curves.get("pass_at_k", {}).get("x", [1]))
    return _finish_accuracy(fig, ax, path, xlabel="number of samples N (log scale)",
                            title=f"{results.get('run', '')}: accuracy vs number of samples")


def plot_top_k(results: Mapping, path: str | Path) -> Path:
    """Accuracy when the verifier's k top-ranked samples vote on the answer (paper Fig. 7b)."""
    fig, (ax,) = _figure()
    cur = results["curves"].get("top_k_voting")
    if cur:
        _curve(ax, cur, metric_label("top_k_voting"), COLORS["top_k_voting"])
        _log_x(ax, cur["x"])
    n = results.get("n_samples")
    _hline(ax, results["metrics"].get("best_of_n"), f"best-of-{n} (k = 1 without voting)", COLORS["best_of_n"])
    _hline(ax, results["metrics"].get("majority_vote"), f"majority vote over all {n}", COLORS["majority_vote"])
    return _finish_accuracy(fig, ax, path, xlabel="k: top-ranked samples that vote (log scale)",
                            title=f"{results.get('run', '')}: verifier top-k voting")


def plot_budget(results: Mapping, path: str | Path) -> Path:
    """Accuracy against generated tokens per problem: voting and best-of-N at each N, value-guided search at each
    K, greedy (results["budget"], on the problems search ran on)."""
    fig, (ax,) = _figure()
    b = results["budget"]
    styles = {"majority_vote": (metric_label("majority_vote"), COLORS["majority_vote"], "^"),
              "best_of_n": (metric_label("best_of_n"), COLORS["best_of_n"], "o"),
              "search": ("value-guided search (K beams)", "tab:orange", "D"),
              "greedy": ("greedy", COLORS["test@1"], "s")}
    for name, cur in b["strategies"].items():
        label, color, marker = styles.get(name, (name, None, "o"))
        x = np.asarray(cur["tokens"], dtype=float)
        y, lo, hi = _pct(cur["value"]), _pct(cur["ci_low"]), _pct(cur["ci_high"])
        ax.errorbar(x, y, yerr=[y - lo, hi - y], marker=marker, ms=4, lw=1.4, capsize=2, label=label, color=color)
        if name == "search":
            for xi, yi, k in zip(x, y, cur["x"], strict=True):
                ax.annotate(f"K={k}", (xi, yi), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xscale("log")
    return _finish_accuracy(fig, ax, path, xlabel="generated tokens per problem (log scale)",
                            title=f"{results.get('run', '')}: accuracy at equal cost ({b['problems']} problems)")


def plot_confidence(results: Mapping, path: str | Path) -> Path:
    """Left: selective answering (answer the majority vote on the share of problems ranked surest; accuracy of
    those answered) by the verifier's mean value and by vote share. Right: the verifier's reliability diagram."""
    fig, (ax, bx) = _figure(11.0, 4.2, ncols=2)
    sel = results["selective"]
    x = 100.0 * np.asarray(sel["coverage"], dtype=float)
    names = {"verifier": ("verifier's mean value", COLORS["best_of_n"]), "vote_share": ("vote share", COLORS["majority_vote"])}
    for key, cur in sel["signals"].items():
        name, color = names.get(key, (key, None))
        _curve(ax, {**cur, "x": x}, name, color)
    ax.set_xlabel("% of test problems answered (surest first)")
    ax.set_ylabel("% of the answered problems right")
    ax.set_title("selective answering (majority-vote answer)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    cal = results.get("calibration")
    if cal:
        bins = cal["bins"]
        bx.plot([0, 1], [0, 1], ls="--", lw=1, color="tab:gray", label="perfect calibration")
        bx.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", color=COLORS["best_of_n"],
                label=f"verifier (ECE {cal['ece']:.3f}, Brier {cal['brier']:.3f})")
        bx.set_xlabel("predicted P(correct) (bin mean)")
        bx.set_ylabel("share of samples correct")
        bx.set_title("reliability of the verifier's score (test samples)")
        bx.grid(alpha=0.3)
        bx.legend(fontsize=8)
    else:
        bx.set_axis_off()
    return _save(fig, path)


def _num(rec: Mapping, *keys: str) -> float | None:
    for k in keys:
        v = rec.get(k)
        if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v):
            return float(v)
    return None


def training_series(records: Sequence[Mapping]) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
    """stage → series name → (steps, values), read defensively from metrics.jsonl records.

    Train records carry "loss" and "train_*" statistics; validation records carry "val_*" keys.
    Event records ("start", "end": the end one repeats the last validation), non-numeric values and
    bookkeeping keys (lr, timings, throughput) are skipped; a record without a step uses its position.
    A "start" at step s (a retry after a failed run, a resume from the checkpoint of step s) replaces what
    earlier attempts logged after step s: the series are those of the training that made the model.
    """
    out: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for stage in ("finetune", "train-verifier"):
        named: dict[str, tuple[list[float], list[float]]] = {}
        for i, rec in enumerate(r for r in records if isinstance(r, Mapping) and r.get("stage") == stage):
            if rec.get("event") == "start" and (start := _num(rec, "step")) is not None:
                for xs, ys in named.values():
                    keep = [k for k, x in enumerate(xs) if x <= start]
                    xs[:], ys[:] = [xs[k] for k in keep], [ys[k] for k in keep]
                named = {k: v for k, v in named.items() if v[0]}
            if rec.get("event") is not None:
                continue
            step = _num(rec, "step", "global_step")
            for key in rec:
                name = key.replace("_", " ")
                if key == "loss":
                    name = "train loss"
                elif not (key.startswith("val_") or (key.startswith("train_") and "loss" in key)):
                    continue
                v = _num(rec, key)
                if v is None:
                    continue
                xs, ys = named.setdefault(name, ([], []))
                xs.append(float(i) if step is None else step)
                ys.append(v)
        if named:
            out[stage] = named
    return out


def plot_training(records: Sequence[Mapping], path: str | Path) -> Path | None:
    """Generator train/val loss and verifier losses / val AUC by step; None when nothing was logged."""
    series = training_series(records)
    if not series:
        return None
    panels: list[tuple[str, dict]] = []
    for stage, title in (("finetune", "generator"), ("train-verifier", "verifier")):
        named = series.get(stage, {})
        losses = {k: v for k, v in named.items() if "loss" in k}
        others = {k: v for k, v in named.items() if "loss" not in k}
        if losses:
            panels.append((f"{title}: loss", losses))
        if others:
            panels.append((f"{title}: validation", others))
    fig, axes = _figure(4.2 * len(panels), 3.6, ncols=len(panels))
    for ax, (title, named) in zip(axes, panels, strict=True):
        for name, (xs, ys) in named.items():
            ax.plot(xs, ys, marker="o" if name.startswith("val") else None, ms=3, lw=1.3, label=name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_score_hist(scores: np.ndarray, correct: np.ndarray, path: str | Path) -> Path:
    """Verifier scores of correct vs wrong test samples: how well it separates them."""
    fig, (ax,) = _figure(5.6, 3.6)
    s = np.asarray(scores, dtype=float).ravel()
    c = np.asarray(correct, dtype=bool).ravel()
    bins = np.linspace(float(s.min()), float(s.max()) + 1e-9, 41)
    for part, color, name in ((~c, "tab:red", "wrong"), (c, "tab:green", "correct")):
        if part.any():  # a density of no samples is 0/0 (numpy warns)
            ax.hist(s[part], bins=bins, alpha=0.6, color=color, label=f"{name} ({part.sum()})", density=True)
    ax.set_xlabel("verifier score (value at the final token)")
    ax.set_ylabel("density")
    ax.set_title("verifier scores of test samples")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_compare(runs: Mapping[str, Mapping], path: str | Path) -> Path:
    """Best-of-N (solid) and majority vote (dotted) curves of several runs on one axis (ablations)."""
    fig, (ax,) = _figure(7.0, 4.6)
    xs: list[int] = []
    for i, (label, res) in enumerate(runs.items()):
        color = f"C{i % 10}"
        curves = res.get("curves", {})
        if "best_of_n" in curves:
            _curve(ax, curves["best_of_n"], f"{label}: {metric_label('best_of_n', short=True)}", color)
            xs += curves["best_of_n"]["x"]
        if "majority_vote" in curves:
            cur = curves["majority_vote"]
            ax.plot(cur["x"], _pct(cur["value"]), ls=":", lw=1.2, color=color,
                    label=f"{label}: {metric_label('majority_vote', short=True)}")
    if xs:
        _log_x(ax, xs)
    return _finish_accuracy(fig, ax, path, xlabel="number of samples N (log scale)", title="comparison of runs",
                            legend_size=7)


def plot_train_size(sizes: Mapping[int, Mapping], path: str | Path) -> Path:
    """Finetuning (test@1) vs verification (best-of-N) and majority vote against the generator's training-set
    size, one run per size, with 95% CIs as error bars (paper Fig. 5)."""
    fig, (ax,) = _figure()
    xs = sorted(sizes)
    for key, label in (("test@1", "finetuning (test@1, greedy)"), ("best_of_n", "verification (best-of-N)"),
                       ("majority_vote", "majority vote over N")):
        ms = [sizes[x]["metrics"].get(key) or {} for x in xs]
        y = _pct([m.get("value") for m in ms])
        lo, hi = _pct([m.get("ci_low") for m in ms]), _pct([m.get("ci_high") for m in ms])
        ax.errorbar(xs, y, yerr=[np.nan_to_num(y - lo), np.nan_to_num(hi - y)], marker="o", ms=4, lw=1.6,
                    capsize=3, label=label, color=COLORS.get(key))
    _log_x(ax, xs)
    return _finish_accuracy(fig, ax, path, xlabel="training problems (log scale)",
                            title="finetuning vs verification by training-set size")
