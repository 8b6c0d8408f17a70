"""The generator × verifier strength grid (issue 37; the paper's Fig. 6c): run it, or tabulate finished cells.

    python docs/research/scripts/strength_grid.py run --scale gpu --out runs/gpu-synth-grid   # one H100, ~10 min (unmeasured)
    python docs/research/scripts/strength_grid.py run --scale tiny --out /tmp/grid            # the plumbing, on CPU
    python docs/research/scripts/strength_grid.py table runs/synth runs/strength-gen20k-ver150k ... --out DIR

`run` trains every generator of the scale as a full `gsmv run` (its verifier started from itself: the paper's
cell), then for every other generator a cell whose verifier starts from that generator's weights and ranks this
one's samples (reuse_from: the generator and samples are linked, not redone). Every generator shares the synth
task's splits and tokenizer (the stronger ones train on extra problems, finetune.extra_problems), so a verifier
can start from any of them and every cell is judged on the same test problems. `table` reads finished run
folders and writes grid.json, grid.md and strength.png (verification gain over greedy and over majority vote
per cell, paired 95% bootstrap CIs over problems) into --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from gsmv.artifacts import RunPaths, read_metrics
from gsmv.config import load_config
from gsmv.data.calculator import find_annotations
from gsmv.data.tasks import reference_values
from gsmv.errors import GsmvError
from gsmv.metrics import auc_within, best_of_n, bootstrap_ci, encode_answers, majority_vote, top_k_voting
from gsmv.run_data import load_run

# Each scale: the base preset, overrides for every run, and the generators (name -> overrides). The verifier of
# every cell is trained with the base preset's recipe; only verifier.init changes across a row.
SCALES: dict[str, dict] = {
    "tiny": {"base": "smoke-synth", "all": ["threads=1"],
             "generators": {"small": [], "large": ["finetune.extra_problems=400", "finetune.epochs=2"]}},
    "cpu": {"base": "synth", "all": [],
            "generators": {"gen20k": [], "gen150k": ["finetune.extra_problems=130000", "finetune.epochs=1"]}},
    # Sized for one H100 in about 10 minutes; never run (no GPU has been lent to this project's sessions yet).
    "gpu": {"base": "synth",
            "all": ["device=cuda", "sample.n_train=100", "sample.train_problems=2000", "sample.n_test=100",
                    "finetune.batch_size=64", "verifier.batch_size=64", "score.batch_size=256",
                    "sample.batch_size=4096", "finetune.save_every=1000", "verifier.save_every=1000"],
            "generators": {
                "gen1m": [],
                "gen20m": ["model.name=cpu-20m", "finetune.lr=5e-4", "finetune.epochs=1",
                           "finetune.extra_problems=200000"],
                "gen40m": ["model.name=cpu-20m", "model.n_embd=512", "model.n_head=8", "finetune.lr=3e-4",
                           "finetune.epochs=1", "finetune.extra_problems=500000"],
            }},
}


def run_grid(scale: str, out: Path, extra: list[str]) -> list[Path]:
    from gsmv import cli

    spec = SCALES[scale]
    gens = spec["generators"]
    folders = []
    for g, over in gens.items():
        args = ["run", "--config", spec["base"], f"out_dir={out}", f"name={g}-ver-{g}", *spec["all"], *over, *extra]
        if cli.main(args) != 0:
            raise GsmvError(f"grid: the run {g}-ver-{g} failed")
        folders.append(out / f"{g}-ver-{g}")
    for g, over in gens.items():
        for v in gens:
            if v == g:
                continue
            name = f"{g}-ver-{v}"
            args = ["run", "--config", spec["base"], f"out_dir={out}", f"name={name}", *spec["all"], *over, *extra,
                    f"reuse_from={out / f'{g}-ver-{g}'}", f"verifier.init={out / f'{v}-ver-{v}' / 'generator' / 'final'}"]
            if cli.main(args) != 0:
                raise GsmvError(f"grid: the run {name} failed")
            folders.append(out / name)
    return folders


def _stage_seconds(run: Path, stage: str) -> float | None:
    """How long `stage` ran for this cell (followed to the run it was linked from); None when not recorded."""
    try:
        entry = json.loads(RunPaths(run).manifest.read_text())["stages"][stage]
    except (OSError, KeyError, ValueError):
        return None
    if entry.get("reused_from"):
        return _stage_seconds(Path(entry["reused_from"]), stage)
    return entry.get("seconds")


def _val_within(run: Path) -> float | None:
    recs = [r for r in read_metrics(RunPaths(run).metrics, "train-verifier") if "val_auc_within" in r]
    return float(recs[-1]["val_auc_within"]) if recs else None


def _wrong_at_first_step(texts: list[str], refs: list[frozenset[str]]) -> float:
    """Of the wrong samples whose steps can be checked, the share whose first step is already wrong."""
    first = checked = 0
    for text, values in zip(texts, refs, strict=True):
        steps = find_annotations(text)
        if not steps:
            continue
        bad = [a.result.strip() not in values for a in steps]
        if any(bad):
            checked += 1
            first += bad[0]
    return first / checked if checked else float("nan")


def cell(run: Path, resamples: int = 1000, show: int = 2) -> dict:
    cfg = load_config(RunPaths(run).config)
    data = load_run(cfg)
    if data.greedy_correct is None:
        raise GsmvError(f"{run}: no greedy test samples (samples/test_greedy)")
    P, n = data.correct.shape
    codes, code_correct = encode_answers(data.answers, data.correct)
    greedy = data.greedy_correct.astype(float)
    maj = majority_vote(codes, code_correct)
    bon = best_of_n(data.scores, data.correct, [n])[0]
    per = np.stack([greedy, data.correct.mean(1), maj, bon, bon - greedy, bon - maj])
    lo, hi = bootstrap_ci(per, resamples, seed=0)
    names = ["greedy", "pass@1", f"majority@{n}", f"best-of-{n}", "gain_over_greedy", "gain_over_majority"]
    out = {"run": str(run), "generator": str(RunPaths(run).generator_final.resolve()),
           "verifier_init": cfg.verifier.init, "n": n, "problems": P,
           "metrics": {k: {"value": float(per[i].mean()), "ci_low": float(lo[i]), "ci_high": float(hi[i])}
                       for i, k in enumerate(names)}}
    ks = sorted({k for k in (1, 3, 10, 30, n) if k <= n})
    tk = top_k_voting(data.scores, data.answers, data.correct, ks)
    out["top_k_voting"] = {str(k): float(v.mean()) for k, v in zip(ks, tk, strict=True)}
    out["coverage"] = float(data.correct.any(1).mean())
    out["test_within_auc"] = auc_within(list(data.scores), list(data.correct))
    out["val_within_auc"] = _val_within(run)
    out["seconds"] = {st: _stage_seconds(run, st) for st in ("finetune", "train-verifier", "score")}
    wrong = np.argwhere(~data.correct)
    rows = data.sample_rows[wrong[:, 0], wrong[:, 1]]
    texts = data.sample_columns(rows, ["text"]).column("text").to_pylist()
    refs = [reference_values(data.problems[p]) for p in wrong[:, 0]]
    out["wrong_at_step1"] = _wrong_at_first_step([t or "" for t in texts], refs)
    # The verifier's top choice where it is wrong: what it falls for.
    top = np.argmax(data.scores, axis=1)
    fooled = [p for p in range(P) if not data.correct[p, top[p]]][:show]
    picked = data.sample_columns(data.sample_rows[fooled, top[fooled]], ["text"]).column("text").to_pylist()
    out["fooled_by"] = [{"question": data.problems[p].question, "reference": data.problems[p].answer,
                         "top_sample": t, "value": float(data.scores[p, top[p]])} for p, t in zip(fooled, picked, strict=True)]
    return out


def _fmt(m: dict, pct: bool = True) -> str:
    f = (lambda x: f"{100 * x:.1f}") if pct else (lambda x: f"{x:+.1f}")
    return f"{f(m['value'])} [{f(m['ci_low'])}, {f(m['ci_high'])}]"


def table(cells: list[dict]) -> str:
    n = cells[0]["n"]
    head = (f"| run | verifier init | greedy | pass@1 | majority@{n} | best-of-{n} | gain vs greedy | gain vs majority | "
            "val within-AUC | test within-AUC | coverage | wrong at step 1 | generator training (s) |")
    lines = [head, "|" + "---|" * 13]
    for c in cells:
        m = c["metrics"]
        val = "-" if c["val_within_auc"] is None else f"{c['val_within_auc']:.3f}"
        test = "-" if c["test_within_auc"] is None else f"{c['test_within_auc']:.3f}"
        lines.append(f"| {Path(c['run']).name} | {c['verifier_init']} | {_fmt(m['greedy'])} | {_fmt(m['pass@1'])} | "
                     f"{_fmt(m[f'majority@{n}'])} | {_fmt(m[f'best-of-{n}'])} | {_fmt(m['gain_over_greedy'])} | "
                     f"{_fmt(m['gain_over_majority'])} | {val} | {test} | {100 * c['coverage']:.1f} | "
                     f"{100 * c['wrong_at_step1']:.0f}% | {c['seconds']['finetune'] or '-'} |")
    return "\n".join(lines) + "\n"


def plot(cells: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(cells)), 3.8))
    x = np.arange(len(cells))
    for off, key, label in ((-0.18, "gain_over_greedy", "best-of-N − greedy"),
                            (0.18, "gain_over_majority", "best-of-N − majority@N")):
        v = np.array([100 * c["metrics"][key]["value"] for c in cells])
        lo = np.array([100 * c["metrics"][key]["ci_low"] for c in cells])
        hi = np.array([100 * c["metrics"][key]["ci_high"] for c in cells])
        ax.bar(x + off, v, width=0.36, label=label, yerr=[v - lo, hi - v], capsize=3)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, [Path(c["run"]).name for c in cells], rotation=15, fontsize=8)
    ax.set_ylabel("test accuracy points (95% CI)")
    ax.set_title("Verification gain by generator and verifier start")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the grid's cells, then tabulate them")
    r.add_argument("--scale", choices=sorted(SCALES), required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    t = sub.add_parser("table", help="tabulate finished run folders")
    t.add_argument("runs", nargs="+", type=Path)
    t.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    try:
        runs = run_grid(a.scale, a.out, a.overrides) if a.cmd == "run" else a.runs
        cells = [cell(Path(p)) for p in runs]
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "grid.json").write_text(json.dumps(cells, indent=1) + "\n")
        (a.out / "grid.md").write_text(table(cells))
        plot(cells, a.out / "strength.png")
    except GsmvError as e:
        print(f"strength_grid: {e}", file=sys.stderr)
        return 1
    print(table(cells), end="")
    print(f"written: {a.out / 'grid.json'}, {a.out / 'grid.md'}, {a.out / 'strength.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
