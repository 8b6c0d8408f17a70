"""Generator size against verification (the paper's size comparison): how large must a finetune-only generator
be to match a small generator with a verifier?

    python docs/research/scripts/generator_size.py --finetune runs/synth runs/synth-gen6 runs/synth-5m-lr1e3 \
        --verified runs/synth --out docs/research/generator_size.png

--finetune: runs whose generators are compared finetune-only, by test@1 (the greedy test sample of each problem,
samples/test_greedy, as graded at sampling time), with 95% bootstrap CIs over problems (gsmv.metrics, the
evaluation's estimator and seed). They need only finetune and sample-test-greedy, not the whole pipeline.
--verified: runs with results.json whose verification numbers (best-of-N at the largest N, majority vote and the
best top-k vote) are drawn at their generator's size. Sizes are non-embedding parameters of generator/final.
The runs must share their test problems (the synth presets do); the script checks the problem ids.
Prints a table and draws the figure (x: generator parameters, log scale).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from gsmv.artifacts import RunPaths, read_shards
from gsmv.metrics import bootstrap_ci
from gsmv.models.loading import count_params, load_model_and_tokenizer


def generator_size(run: Path) -> int:
    model, _ = load_model_and_tokenizer(str(RunPaths(run).generator_final), dtype="float32", device="cpu")
    return int(count_params(model)["non_embedding"])


def greedy_correct(run: Path) -> dict[str, bool]:
    folder = RunPaths(run).samples("test_greedy")
    t = read_shards(folder, columns=["problem_id", "is_correct"])  # a one-line error when there are none
    return {p: bool(c) for p, c in zip(t.column("problem_id").to_pylist(), t.column("is_correct").to_pylist(),
                                       strict=True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--finetune", nargs="+", required=True, type=Path)
    ap.add_argument("--verified", nargs="*", default=[], type=Path)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args()

    rows, problems = [], None
    for run in args.finetune:
        ok = greedy_correct(run)
        if problems is None:
            problems = sorted(ok)
        elif sorted(ok) != problems:
            raise SystemExit(f"{run}: its test problems differ from {args.finetune[0]}'s")
        v = np.array([ok[p] for p in problems], dtype=np.float64)
        lo, hi = bootstrap_ci(v[None, :], args.bootstrap, seed=0)
        rows.append({"run": str(run), "params": generator_size(run), "what": "finetune (test@1)",
                     "value": float(v.mean()), "lo": float(lo[0]), "hi": float(hi[0])})
    for run in args.verified:
        res = json.loads((Path(run) / "results.json").read_text())
        m, curves, n = res["metrics"], res["curves"], generator_size(run)
        top = curves["top_k_voting"]
        best = int(np.argmax(top["value"]))
        pick = [("verifier best-of-N", m["best_of_n"]), ("majority vote", m["majority_vote"])]
        if top["x"][best] < max(top["x"]):  # at k = N, top-k voting is the majority vote already listed
            pick.append((f"top-k voting (k={top['x'][best]})", {k: top[k][best] for k in ("value", "ci_low", "ci_high")}))
        for what, d in pick:
            rows.append({"run": str(run), "params": n, "what": what, "value": d["value"], "lo": d["ci_low"],
                         "hi": d["ci_high"]})

    print("| run | generator (non-embedding params) | what | accuracy [95% CI] |")
    print("|---|---:|---|---|")
    for r in rows:
        print(f"| `{r['run']}` | {r['params'] / 1e6:.2f}M | {r['what']} | "
              f"{100 * r['value']:.1f} [{100 * r['lo']:.1f}, {100 * r['hi']:.1f}] |")
    if args.out is None:
        return

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.4))
    kinds = ["finetune (test@1)", "verifier best-of-N", "majority vote", "top-k voting"]
    drawn = set()
    for r in rows:
        kind = r["what"] if r["what"] in kinds else "top-k voting"
        key = (r["params"], kind, r["value"], r["lo"], r["hi"])
        if key in drawn:  # runs that share their samples share their vote: draw it once
            continue
        drawn.add(key)
        k = kinds.index(kind)
        x = r["params"] * 1.07 ** k  # each kind a little to the right, so error bars at one size do not overlap
        y, err = 100 * r["value"], [[100 * (r["value"] - r["lo"])], [100 * (r["hi"] - r["value"])]]
        ax.errorbar(x, y, yerr=err, fmt="os^D"[k], capsize=3, color=f"C{k}", label=kind)
        ax.annotate(Path(r["run"]).name, (x, y), textcoords="offset points", xytext=(5, -3), fontsize=7)
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=True))
    ax.legend(uniq.values(), uniq.keys(), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("generator parameters (non-embedding)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Finetune-only generators vs a small generator with a verifier")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
