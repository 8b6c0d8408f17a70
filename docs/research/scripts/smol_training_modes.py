"""Val within-problem AUC against training wall time for three ways to train the SmolLM2 verifier (issue 39).

    GSMV_CACHE=~/.cache/gsmv HF_HUB_OFFLINE=1 python docs/research/scripts/smol_training_modes.py \
        --mode top4 --minutes 20 --eval-minutes 10 --val-problems 100 --out runs/smol-modes
    (then --mode full and --mode lora: one process per mode, so each one's peak memory is its own)

The synth-smol preset's recipe on its own run folder (`gsmv run --config synth-smol --until label` makes it): its
train samples and reference LM examples (gsmv.train.verifier.read_training_data, build_examples), its batch plan,
optimizer, schedule (cosine over one epoch) and loss, cut after a fixed time of training. Every mode starts
from the same head, the stage's logistic probe of the frozen model's features (calibrate; fitted once and kept
in the out folder), so the t=0 point is shared. Modes:

- full: every parameter trains;
- topK: verifier.train_layers=K (the preset: top 4 of 30 layers, the final norm and the head);
- lora: peft LoRA r=16 on q/v projections of every layer, plus the head, at --lora-lr (LoRA is usually run at
  about 10x the full-model lr; the other modes use the preset's).

At every --eval-minutes of training time (the val passes are not counted) the first --val-problems val
problems' samples are scored as the stage's val pass scores them on one process (shared prompts) and the
stage's val metrics (val_metrics) logged with a bootstrap CI of within-problem AUC over problems. Out: <out>/<mode>.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gsmv import metrics
from gsmv.config import load_config
from gsmv.models.verifier import input_limit, pad_id_of, score_sequences
from gsmv.train import verifier as tv
from gsmv.train.loop import batch_plan, build_optimizer, build_scheduler

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
from bench_pretrained_verifier import make_arm  # noqa: E402


def auc_within_ci(problem_ids, scores, labels, rounds: int = 1000, seed: int = 0) -> list[float]:
    """95% bootstrap interval of the mean within-problem AUC (gsmv.metrics.bootstrap_ci, the evaluation's
    estimator), resampling the problems that have both labels; NaN when none has."""
    groups: dict[str, list[int]] = {}
    for i, pid in enumerate(problem_ids):
        groups.setdefault(pid, []).append(i)
    per = [a for ix in groups.values() if (a := metrics.auc(scores[ix], labels[ix])) is not None]
    lo, hi = metrics.bootstrap_ci(np.array(per, dtype=np.float64)[None, :], rounds, seed)
    return [float(lo[0]), float(hi[0])]


def report(out: Path, png: Path) -> None:
    """A markdown table of every <out>/<mode>.json and the within-problem AUC curves against training time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [json.loads(f.read_text()) for f in sorted(out.glob("*.json")) if f.name not in ("t0.json", "setup.json")]
    print("| mode | lr | trainable | AdamW state | peak RSS | value examples/s | "
          "within-AUC [95% CI] by training minutes | pooled AUC at the end | val best-of-8 at the end |")
    print("|---|---|---|---|---|---|---|---|---|")
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, r in enumerate(runs):
        pts = r["points"]
        curve = ", ".join(f"{p['train_seconds'] / 60:.0f} min {p['val_auc_within']:.3f} "
                          f"[{p['val_auc_within_ci'][0]:.2f}, {p['val_auc_within_ci'][1]:.2f}]" for p in pts)
        end = pts[-1]
        print(f"| {r['mode']} | {r['lr']:g} | {r['trainable_params'] / 1e6:.1f}M | {r['adamw_state_mb']:.0f} MB | "
              f"{r['peak_rss_mb'] / 1024:.1f} GB | {r['value_examples_per_s']:.2f} | {curve} | {end['val_auc']:.3f} | "
              f"{100 * end['val_best_of_n']:.1f} |")
        t = [p["train_seconds"] / 60 + 0.3 * i for p in pts]  # offset so the intervals do not overlap
        ax.errorbar(t, [p["val_auc_within"] for p in pts], capsize=3, marker="o", label=r["mode"],
                    yerr=np.array([[p["val_auc_within"] - p["val_auc_within_ci"][0],
                                    p["val_auc_within_ci"][1] - p["val_auc_within"]] for p in pts]).T)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("training minutes (2 CPU threads; val passes not counted)")
    ax.set_ylabel("val within-problem AUC (95% CI)")
    ax.set_title(f"SmolLM2-135M verifier: {runs[0]['val_problems']} val problems x 8" if runs else "")
    ax.set_ylim(0.4, 0.8)  # room above the intervals for the legend
    ax.legend(loc="upper center", ncol=3)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)


def make_verifier(cfg, mode: str, head_state: dict | None):
    if not (mode in ("full", "lora") or (mode.startswith("top") and mode[3:].isdigit())):
        raise SystemExit(f"--mode {mode}: valid modes are full, topK (K layers), lora")
    vcfg = cfg.verifier
    ver, tok = make_arm(mode, vcfg.init, vcfg.head, dropout=vcfg.dropout)  # the speed benchmark's modes
    ver.reads = "text"
    if head_state is not None:
        ver.linear.load_state_dict(head_state)
    return ver, tok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="synth-smol")
    ap.add_argument("--mode", help="full | topK | lora")
    ap.add_argument("--report", default="", help="no training: the modes' table from --out, their curves to this png")
    ap.add_argument("--minutes", type=float, default=15.0, help="training time (val passes not counted)")
    ap.add_argument("--eval-minutes", type=float, default=5.0, help="training time between val passes")
    ap.add_argument("--val-problems", type=int, default=100)
    ap.add_argument("--lora-lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/smol-modes")
    ap.add_argument("overrides", nargs="*", help="config key=value")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    if a.report:
        return report(out, Path(a.report))
    if not a.mode:
        raise SystemExit("--mode is required (full | topK | lora), or --report")
    out.mkdir(parents=True, exist_ok=True)
    lr = a.lora_lr if a.mode == "lora" else None
    cfg = load_config(a.config, a.overrides + ([f"verifier.lr={lr}"] if lr else []))
    vcfg = cfg.verifier
    torch.manual_seed(vcfg.seed)

    # The shared start (probe head, t0.json) is reused across modes: only for the same data and val problems.
    setup = {"config": a.config, "overrides": a.overrides, "val_problems": a.val_problems}
    setup_path = out / "setup.json"
    if setup_path.is_file() and json.loads(setup_path.read_text()) != setup:
        raise SystemExit(f"{setup_path}: {a.out} holds modes run with {setup_path.read_text().strip()}; "
                         "use another --out for these settings")
    setup_path.write_text(json.dumps(setup) + "\n")
    head_path = out / "probe_head.pt"
    head_state = torch.load(head_path) if head_path.is_file() else None
    ver, tok = make_verifier(cfg, a.mode, head_state)
    max_len = input_limit(ver.lm, vcfg.max_len)
    train_rows, val_rows, refs = tv.read_training_data(cfg, tok, "text")
    keep = set(sorted({r["problem_id"] for r in val_rows})[: a.val_problems])
    val_rows = [r for r in val_rows if r["problem_id"] in keep]
    examples, n_value, _, _ = tv.build_examples(train_rows, refs, vcfg, tok, max_len)
    collate = tv.collate_fn(pad_id_of(tok), vcfg.pack_tokens)
    if head_state is None:  # the stage's probe start, on the frozen model (the same for every mode)
        tv.calibrate(ver, examples[:n_value], collate, vcfg.batch_size)
        torch.save(ver.linear.state_dict(), head_path)
    seqs = [r["prompt"] + r["tokens"] for r in val_rows]
    starts = [len(r["prompt"]) for r in val_rows]
    pids = [r["problem_id"] for r in val_rows]
    labels = np.array([r["label"] for r in val_rows], dtype=bool)

    @torch.no_grad()
    def evaluate() -> dict:
        """The stage's val pass on one process (make_eval_fn: shared prompts, val_metrics), plus the CI."""
        t0 = time.perf_counter()
        ver.eval()
        res = score_sequences(ver, seqs, starts, batch_size=vcfg.batch_size, pad_id=pad_id_of(tok),
                              max_len=max_len, share_prompts=True)
        scores = np.array([final for final, _ in res])
        m = {k: float(v) for k, v in tv.val_metrics(pids, scores, labels).items()}
        m["val_auc_within_ci"] = auc_within_ci(pids, scores, labels)
        m["eval_seconds"] = round(time.perf_counter() - t0, 1)
        return m

    trainable = sum(p.numel() for p in ver.parameters() if p.requires_grad)
    result = {"mode": a.mode, "config": a.config, "lr": vcfg.lr, "trainable_params": trainable,
              "adamw_state_mb": round(2 * 4 * trainable / 2**20, 1), "train_examples": len(examples),
              "value_examples": n_value, "val_samples": len(val_rows), "val_problems": len(keep),
              "threads": a.threads, "date": time.strftime("%Y-%m-%d"), "points": []}
    zero = out / "t0.json"
    if zero.is_file():
        result["points"].append(json.loads(zero.read_text()))
    else:
        p0 = {"train_seconds": 0.0, "steps": 0, "value_examples_seen": 0, **evaluate()}
        zero.write_text(json.dumps(p0, indent=2) + "\n")
        result["points"].append(p0)
    print(json.dumps(result["points"][-1]), flush=True)

    ver.train()
    opt = build_optimizer(ver, vcfg)
    groups = tv.batch_groups([ex.get("group", -1) for ex in examples], vcfg)
    plan = batch_plan([len(ex["input_ids"]) for ex in examples], vcfg.batch_size, vcfg.seed, 0, groups=groups)
    sched = build_scheduler(opt, vcfg, len(plan))
    loss_fn = tv.make_loss_fn(vcfg)
    params = [p for p in ver.parameters() if p.requires_grad]
    train_s, seen, next_eval, losses = 0.0, 0, a.eval_minutes * 60, []
    for step, idx in enumerate(plan, 1):
        t0 = time.perf_counter()
        batch = collate([examples[i] for i in idx])
        loss, stats = loss_fn(ver, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, vcfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        train_s += time.perf_counter() - t0
        seen += sum(1 for i in idx if i < n_value)
        losses.append(stats["value_loss"])
        if train_s >= next_eval or step == len(plan) or train_s >= a.minutes * 60:
            point = {"train_seconds": round(train_s, 1), "steps": step, "value_examples_seen": seen,
                     "value_loss_recent": float(np.mean(losses[-20:])), **evaluate()}
            result["points"].append(point)
            print(json.dumps(point), flush=True)
            ver.train()
            while next_eval <= train_s:  # one pass per interval crossed, not one per step after it
                next_eval += a.eval_minutes * 60
            if train_s >= a.minutes * 60:
                break
    result["value_examples_per_s"] = round(seen / train_s, 3)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    (out / f"{a.mode}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
