"""Does the generator know when a step goes wrong? A linear probe on its frozen hidden states at step ends (issue 44,
item 4; Physics of Language Models 2.2 reports such a probe detects mistakes in a model trained from scratch).

    python docs/research/scripts/step_probe.py --run runs/synth --train-samples 8000 --out docs/research/process/probe.json

For every sample of the run's train (the first --train-samples), val and test splits: the generator (the run's
generator/final, frozen) reads the question and the sample's tokens; its last hidden state after the token
that closes each `<<expr=result>>` step (gsmv.steps.read_split_samples) is that step's feature, and the step's
label is whether the solution prefix ending there is right (every step so far has a reference value: the
synthetic task's exact truth). A logistic regression (standardised features, L2 strength --l2, full-batch
L-BFGS) is fitted on the train steps. Its P(prefix right) is then a step value like the verifier's: on test,
step AUC (pooled and within problem), ProcessBench localization F1 with the threshold chosen on val and the
same baselines (gsmv.steps.localization), and best-of-N by the minimum over a sample's step values.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from gsmv import steps as S
from gsmv.artifacts import RunPaths
from gsmv.config import load_config
from gsmv.data.gsm8k import format_prompt
from gsmv.data.tasks import load_split
from gsmv.metrics import auc_within, best_of_n, bootstrap_ci
from gsmv.models.loading import load_model_and_tokenizer
from gsmv.models.tokenizer import encode_prompt


@torch.no_grad()
def step_features(model, tok, problems: list, samples: S.SplitSamples, batch: int = 64) -> list[np.ndarray]:
    """[S] of float [steps, hidden]: the last hidden state after each step's closing token."""
    prompts = {i: encode_prompt(tok, format_prompt(p.question)) for i, p in enumerate(problems)}
    out: list[np.ndarray] = [np.zeros((0, model.config.hidden_size), np.float32)] * len(samples.tokens)
    todo = [s for s in range(len(samples.tokens)) if samples.ends[s]]
    todo.sort(key=lambda s: len(prompts[int(samples.problem[s])]) + len(samples.tokens[s]))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    for b in range(0, len(todo), batch):
        rows = todo[b:b + batch]
        seqs = [prompts[int(samples.problem[s])] + samples.tokens[s] for s in rows]
        L = max(len(x) for x in seqs)
        ids = torch.full((len(rows), L), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), L), dtype=torch.long)
        for i, x in enumerate(seqs):
            ids[i, :len(x)] = torch.tensor(x)
            mask[i, :len(x)] = 1
        h = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
        for i, s in enumerate(rows):
            start = len(prompts[int(samples.problem[s])])
            pos = [start + e for e in samples.ends[s]]
            out[s] = h[i, pos].float().numpy()
    return out


def fit_probe(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, np.ndarray, torch.nn.Linear]:
    """Standardisation (mean, std) and a logistic regression fitted by full-batch L-BFGS."""
    mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-6
    xt = torch.tensor((x - mu) / sd, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.float32)
    lin = torch.nn.Linear(x.shape[1], 1)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(lin(xt).squeeze(-1), yt)
        loss = loss + l2 * (lin.weight ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return mu, sd, lin


@torch.no_grad()
def probe_values(feats: list[np.ndarray], mu, sd, lin) -> list[np.ndarray]:
    return [torch.sigmoid(lin(torch.tensor((f - mu) / sd, dtype=torch.float32))).squeeze(-1).numpy().astype(float)
            if len(f) else np.zeros(0) for f in feats]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--train-samples", type=int, default=8000)
    ap.add_argument("--l2", type=float, default=1e-3)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    t0 = time.time()
    cfg = load_config(RunPaths(a.run).config, [f"out_dir={Path(a.run).parent}"])
    model, tok = load_model_and_tokenizer(RunPaths(a.run).generator_final, dtype="float32", device="cpu")
    model.eval()
    data = {}
    for split, limit in (("train", a.train_samples), ("val", 0), ("test", 0)):
        problems = load_split(cfg, split)
        samples = S.read_split_samples(cfg, split, problems, True, limit)
        if isinstance(samples, str):
            raise SystemExit(f"step_probe: {samples}")
        data[split] = (problems, samples, step_features(model, tok, problems, samples))
    _, tr, ftr = data["train"]
    x = np.concatenate([f for f in ftr if len(f)])
    y = np.concatenate([np.cumprod(o).astype(float) for o, f in zip(tr.ok, ftr, strict=True) if len(f)])
    mu, sd, lin = fit_probe(x, y, a.l2)
    result: dict = {"run": a.run, "train_steps": int(len(y)), "train_right_share": float(y.mean()), "l2": a.l2}
    steps = {}
    for split in ("val", "test"):
        problems, smp, f = data[split]
        vals = probe_values(f, mu, sd, lin)
        # The probe has no final-token value: a sample's "final" is its last step's value (0.5 with no step).
        final = np.array([v[-1] if len(v) else 0.5 for v in vals])
        steps[split] = (S.SampleSteps(smp.problem, smp.correct, final, vals, smp.ok),
                        np.array([k[1] for k in smp.keys], dtype=np.int64))
    test, sidx = steps["test"]
    result["step_auc"] = S.step_auc(test)
    result["localization"] = S.localization(test, steps["val"][0], sidx, bootstrap=a.bootstrap, seed=0)
    # As a verifier: the minimum over the steps' P(prefix right), ranked within each test problem.
    P = test.n_problems
    n = len(sidx) // P
    order = np.argsort(test.problem * n + sidx)
    score = np.array([v.min() if len(v) else 0.5 for v in test.values])[order].reshape(P, n)
    correct = test.correct[order].reshape(P, n)
    row = best_of_n(score, correct, [n])
    lo, hi = bootstrap_ci(row, a.bootstrap, 0)
    result["min_aggregate"] = {"best_of_n": float(row.mean()), "ci": [float(lo[0]), float(hi[0])],
                               "auc_within": auc_within(score, correct), "n": n}
    result["seconds"] = round(time.time() - t0, 1)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    loc = result["localization"]["balanced"]
    print(json.dumps({"step_auc": result["step_auc"], "f1_balanced": {k: v["f1"] for k, v in loc.items()},
                      "min_aggregate": result["min_aggregate"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
