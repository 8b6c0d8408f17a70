"""A verifier's learning curve on a run folder's samples: within-problem AUC and best-of-N against value
examples seen, on a fixed subset of its own training samples (fit) and on the val samples (generalisation).

    python benchmarks/verifier_curve.py --run runs/synth --out runs/curves/base --steps 3000 --eval-every 250
    python benchmarks/verifier_curve.py --plot docs/synth/verifier_curve.png runs/curves/*/curve.jsonl

The verifier starts from the run's generator/final and is trained as the train-verifier stage trains it (the
same examples, batch layout and loss: gsmv.train.verifier; the loop: gsmv.train.curve) at a constant learning
rate, evaluated every --eval-every steps. Every knob that the stage reads from cfg.verifier is a key=value
override (verifier.lr=3e-3 verifier.lm_weight=0 ...). --problems/--mixed/--per-problem choose the training
samples; with a few hundred mixed-label problems and many steps this is the memorisation test of issue 20.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from gsmv.artifacts import RunPaths
from gsmv.config import load_config
from gsmv.models.verifier import input_limit, pad_id_of
from gsmv.train import verifier as tv
from gsmv.train.curve import ProbeSet, train_curve


def choose_rows(rows: list[dict], problems: int, mixed: bool, per_problem: int, dedupe: bool) -> list[dict]:
    """The first `problems` problems' rows (in shard order; only problems with both labels when `mixed`), at most
    `per_problem` of each (0: all), identical samples of one problem once when `dedupe`."""
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["problem_id"], []).append(r)
    out, n = [], 0
    for rs in by.values():
        if dedupe:
            rs = list({tuple(r["tokens"]): r for r in rs}.values())
        rs = rs[:per_problem] if per_problem else rs
        if mixed and len({r["label"] for r in rs}) < 2:  # mixed among the samples kept
            continue
        out += rs
        n += 1
        if problems and n == problems:
            break
    return out


def run(a: argparse.Namespace) -> None:
    # A constant learning rate unless overridden: every point of the curve is a model one could stop at.
    cfg = load_config(RunPaths(a.run).config, ["verifier.schedule=constant", *a.overrides])
    vcfg = cfg.verifier
    torch.set_num_threads(a.threads)
    torch.manual_seed(vcfg.seed)
    ver, tok, _ = tv.build_initial_verifier(cfg)
    max_len = input_limit(ver.lm, vcfg.max_len)
    all_rows, val_rows, refs = tv.read_training_data(cfg, tok)
    rows = choose_rows(all_rows, a.problems, a.mixed, a.per_problem, a.dedupe)
    examples, n_value, _, _ = tv.build_examples(rows, refs, vcfg, tok, max_len)
    collate = tv.collate_fn(pad_id_of(tok), vcfg.pack_tokens)
    tv.calibrate(ver, examples[:n_value], collate, vcfg.batch_size)
    # The fit probe: the training samples of its first mixed-label problems (a fixed subset, seen in training).
    fit_rows = choose_rows(rows, a.fit_problems, True, 0, False)
    probes = [ProbeSet.from_rows("fit", fit_rows), ProbeSet.from_rows("val", val_rows)]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"run": a.run, "overrides": a.overrides, "problems": len({r["problem_id"] for r in rows}),
            "value_examples": n_value, "lm_examples": len(examples) - n_value, "fit_samples": len(fit_rows),
            "val_samples": len(val_rows), "steps": a.steps, "batch_size": vcfg.batch_size, "lr": vcfg.lr,
            "date": time.strftime("%Y-%m-%d")}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta))
    log_path = out / "curve.jsonl"
    log_path.write_text("")

    def log(rec: dict) -> None:
        with log_path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()), flush=True)

    train_curve(ver, examples, vcfg=vcfg, collate=collate, loss_fn=tv.make_loss_fn(vcfg), steps=a.steps,
                eval_every=a.eval_every, probes=probes, max_len=max_len,
                groups=tv.batch_groups([ex.get("group", -1) for ex in examples], vcfg), log=log,
                lm_probe=a.lm_probe)


def plot(out: str, logs: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for path in logs:
        recs = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        name = Path(path).parent.name if Path(path).name == "curve.jsonl" else Path(path).stem  # runs/ or docs/ copies
        recs = [r for r in recs if r["examples"] > 0]  # the untrained start has no place on a log axis
        x = np.array([r["examples"] for r in recs])
        line, = axes[0].plot(x, [r["val_auc_within"] for r in recs], marker="o", ms=3, label=f"{name} val")
        axes[0].plot(x, [r["fit_auc_within"] for r in recs], ls="--", color=line.get_color(), label=f"{name} fit")
        axes[1].plot(x, [100 * r["val_best_of_n"] for r in recs], marker="o", ms=3, color=line.get_color(), label=name)
    axes[0].axhline(0.5, color="grey", lw=0.8)
    axes[0].set(xscale="log", xlabel="value examples seen", ylabel="within-problem AUC",
                title="ranking one problem's samples (dashed: its own training samples)")
    axes[1].set(xscale="log", xlabel="value examples seen", ylabel="val best-of-N (%)", title="val best-of-N (N: the run's val samples a problem)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/synth")
    ap.add_argument("--out", default="runs/curves/default")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--problems", type=int, default=0, help="train problems to use (0: all sampled)")
    ap.add_argument("--mixed", action="store_true", help="only problems whose samples have both labels")
    ap.add_argument("--per-problem", type=int, default=0, help="samples per problem at most (0: all)")
    ap.add_argument("--dedupe", action="store_true", help="identical samples of one problem once")
    ap.add_argument("--fit-problems", type=int, default=100, help="mixed-label training problems in the fit probe")
    ap.add_argument("--lm-probe", action="store_true",
                    help="also rank the probes by the verifier's own log-likelihood (and its ratio to the start's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--plot", default="", help="write this PNG from the curve.jsonl files given instead of training")
    ap.add_argument("overrides", nargs="*", help="config overrides (verifier.lr=3e-3 ...) or, with --plot, logs")
    a = ap.parse_args()
    if a.plot:
        plot(a.plot, a.overrides)
    else:
        run(a)


if __name__ == "__main__":
    main()
