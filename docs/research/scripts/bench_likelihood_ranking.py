"""A baseline for the verifier: rank each problem's samples by the generator's own log-likelihood.

    python docs/research/scripts/bench_likelihood_ranking.py --run runs/synth --split test --problems 500

Scores every sample of the first K problems of samples/<split> with the run's generator (generator/final):
the sum and the mean log-probability of the tokens the generator chose (calculator-forced tokens excluded,
EOS included for finished samples). Prints, for each ranking and for the run's verifier scores when the
split is test (scores/test), the pooled and within-problem AUC and best-of-N at N = 1, 4, 16, n (gsmv.metrics,
exact over N-subsets, score ties split). A verifier that does not beat its own generator's likelihood has not
learned to check solutions.
"""

from __future__ import annotations

import argparse
import collections

import numpy as np
import torch

from gsmv.artifacts import RunPaths, read_shards
from gsmv.metrics import auc, auc_within, best_of_n
from gsmv.models.likelihood import sequence_loglik
from gsmv.models.loading import load_model_and_tokenizer
from gsmv.models.verifier import prompt_ids, solution_ids
from gsmv.run_data import first_samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/synth")
    ap.add_argument("--split", default="test", choices=["train", "val", "test"])
    ap.add_argument("--problems", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    paths = RunPaths(a.run)
    model, tok = load_model_and_tokenizer(paths.generator_final)
    model.eval()
    problems, rows = first_samples(a.run, a.split, a.problems,
                                   ["problem_id", "sample_idx", "tokens", "is_correct", "finished", "forced"])
    seqs, starts, keep = [], [], []
    for r in rows:
        p = prompt_ids(tok, problems[r["problem_id"]].question)
        sol = solution_ids(r["tokens"], r["finished"], tok.eos_token_id)
        seqs.append(p + sol)
        starts.append(len(p))
        forced = list(r["forced"] or [])
        keep.append([not f for f in forced] + [True] * (len(sol) - len(forced)))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ll = sequence_loglik(model, seqs, starts, pad_id=pad, keep=keep)
    rankings = {"generator log-likelihood (sum)": ll[:, 0], "generator log-likelihood (mean)": ll[:, 1]}
    if a.split == "test" and paths.scores("test").is_dir():
        sc = read_shards(paths.scores("test"), ["problem_id", "sample_idx", "score"]).table.to_pylist()
        by = {(r["problem_id"], r["sample_idx"]): r["score"] for r in sc}
        rankings["verifier (scores/test)"] = np.array([by[(r["problem_id"], r["sample_idx"])] for r in rows])
    groups = collections.defaultdict(list)
    for i, r in enumerate(rows):
        groups[r["problem_id"]].append(i)
    ix = list(groups.values())
    n = min(len(g) for g in ix)
    ix = [g[:n] for g in ix]
    correct = np.array([bool(r["is_correct"]) for r in rows])
    grid = sorted({1, 4, 16, n} & set(range(1, n + 1)))
    print(f"{a.run} {a.split}: {len(ix)} problems x {n} samples")
    print("| ranking | AUC pooled | AUC within problem | " + " | ".join(f"best-of-{k}" for k in grid) + " |")
    print("|---|---:|---:|" + "---:|" * len(grid))
    for name, s in rankings.items():
        S = np.stack([s[g] for g in ix])
        C = np.stack([correct[g] for g in ix])
        bon = [float(v.mean()) for v in best_of_n(S, C, grid)]
        within = auc_within(list(S), list(C))
        print(f"| {name} | {auc(s, correct):.3f} | {within:.3f} | " + " | ".join(f"{100 * v:.1f}" for v in bon) + " |")


if __name__ == "__main__":
    main()
