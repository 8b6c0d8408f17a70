"""How well a trained verifier ranks samples, pooled and within a problem, on train or val samples.

    python docs/research/scripts/bench_verifier_ranking.py --run runs/synth --split train --problems 300

Scores the first K problems' samples of a split (samples/<split>) with the run's verifier/final and prints
the pooled ROC AUC and the mean within-problem AUC (gsmv.metrics). On train samples a low within-problem AUC
means the verifier underfits its own data; on val, that it does not generalize. `--verifier DIR` scores
another run's verifier on this run's samples (e.g. an ablation's).
"""

from __future__ import annotations

import argparse
import collections

import numpy as np
import torch

from gsmv.artifacts import RunPaths
from gsmv.metrics import auc, auc_within
from gsmv.models.verifier import load_verifier, prompt_ids, score_sequences, solution_ids
from gsmv.run_data import first_samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/synth")
    ap.add_argument("--split", default="val", choices=["train", "val"])
    ap.add_argument("--problems", type=int, default=300, help="first K problems of the split's samples")
    ap.add_argument("--verifier", default="", help="verifier folder (default: RUN/verifier/final)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    paths = RunPaths(a.run)
    ver, tok = load_verifier(a.verifier or paths.verifier_final)
    problems, rows = first_samples(a.run, a.split, a.problems, ["problem_id", "tokens", "is_correct", "finished"])
    seqs, starts = [], []
    for r in rows:
        prompt = prompt_ids(tok, problems[r["problem_id"]].question)
        seqs.append(prompt + solution_ids(r["tokens"], r["finished"], tok.eos_token_id))
        starts.append(len(prompt))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    scores = np.array([v for v, _ in score_sequences(ver, seqs, starts, batch_size=64, pad_id=pad)])
    correct = np.array([bool(r["is_correct"]) for r in rows])
    groups = collections.defaultdict(list)
    for i, r in enumerate(rows):
        groups[r["problem_id"]].append(i)
    within = auc_within([scores[ix] for ix in groups.values()], [correct[ix] for ix in groups.values()])
    print("| run | split | problems | samples | AUC pooled | AUC within problem |")
    print("|---|---|---:|---:|---:|---:|")
    print(f"| {a.run} | {a.split} | {len(groups)} | {len(rows)} | {auc(scores, correct):.3f} | {within:.3f} |")


if __name__ == "__main__":
    main()
