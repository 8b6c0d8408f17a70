"""Prompt format and value head for an instruct backbone (issue 39), measured on frozen features.

    GSMV_CACHE=~/.cache/gsmv HF_HUB_OFFLINE=1 python docs/research/scripts/smol_prompt_head_probe.py \
        --run runs/synth --train-problems 100 --val-problems 100 --out docs/research/smol-probe.json

SmolLM2-135M-Instruct (gsmv.models.sources) reads a run's samples as text, two ways:

- plain: `question\\n` then the solution, as gsmv formats every prompt (encode_prompt + encode_solution);
- chat:  the question as the user turn of the model's chat template, the solution as the assistant's reply
         (its end token `<|im_end|>` is the EOS, so a finished sample ends the turn).

For each, the final hidden state at the last position (the value a verifier ranks by) of every train-problem
sample fits gsmv's linear-head start (Verifier.fit_linear_head: the probe the preset's head begins from); it is
scored on the val-problem samples. The reserved-token head is a fixed projection of the same state: a token the
vocabulary lacks gets a mean-initialised row (the mean of the tied embedding), and its logit is h · that row
(monotone in the value whatever the head's gain and bias). Within-problem AUC on val decides: whichever
format ranks better, and whether the token head's projection carries any signal a probe would not.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from gsmv.data.gsm8k import format_prompt
from gsmv.models.sources import resolve_model
from gsmv.models.tokenizer import encode_prompt, encode_solution
from gsmv.models.verifier import Verifier
from gsmv.run_data import first_samples
from gsmv.train.verifier import val_metrics

COLUMNS = ["problem_id", "sample_idx", "text", "is_correct", "finished"]


def encode(tok, fmt: str, question: str, text: str, finished: bool) -> list[int]:
    if fmt == "plain":
        return encode_prompt(tok, format_prompt(question)) + encode_solution(tok, text, eos=finished)
    prompt = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                     tokenize=True)
    prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)  # a BatchEncoding or plain ids
    return prompt + encode_solution(tok, text, eos=finished)


@torch.no_grad()
def last_hidden(lm, seqs: list[list[int]], pad: int, batch: int) -> torch.Tensor:
    """Final hidden state (after the last norm) at each sequence's last position; length-sorted right-padded batches."""
    order = np.argsort([len(s) for s in seqs])
    out = torch.empty(len(seqs), lm.config.hidden_size)
    for i in range(0, len(seqs), batch):
        idx = order[i:i + batch]
        width = max(len(seqs[j]) for j in idx)
        ids = torch.full((len(idx), width), pad)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, j in enumerate(idx):
            ids[r, :len(seqs[j])] = torch.tensor(seqs[j])
            mask[r, :len(seqs[j])] = 1
        h = lm.model(input_ids=ids, attention_mask=mask).last_hidden_state
        out[torch.as_tensor(idx)] = h[torch.arange(len(idx)), mask.sum(1) - 1].float()
    return out


def ranking_metrics(scores: np.ndarray, rows: list[dict]) -> dict:
    """The train-verifier stage's val metrics (gsmv.train.verifier.val_metrics): pooled and within-problem AUC,
    best-of-N at each problem's own sample count, the samples' own accuracy."""
    m = val_metrics([r["problem_id"] for r in rows], scores, np.array([bool(r["is_correct"]) for r in rows]))
    return {k: m[f"val_{k}"] for k in ("auc_within", "auc", "best_of_n", "base_accuracy")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/synth")
    ap.add_argument("--train-problems", type=int, default=100)
    ap.add_argument("--val-problems", type=int, default=100)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    folder = resolve_model("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(folder)
    lm = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    probs_tr, train = first_samples(a.run, "train", a.train_problems, COLUMNS)
    probs_va, val = first_samples(a.run, "val", a.val_problems, COLUMNS)
    token_row = lm.get_input_embeddings().weight.detach().float().mean(0)
    results = {"run": a.run, "train_samples": len(train), "val_samples": len(val), "model": folder, "formats": {}}
    for fmt in ("plain", "chat"):
        t0 = time.time()
        seq_tr = [encode(tok, fmt, probs_tr[r["problem_id"]].question, r["text"], r["finished"]) for r in train]
        seq_va = [encode(tok, fmt, probs_va[r["problem_id"]].question, r["text"], r["finished"]) for r in val]
        h_tr, h_va = last_hidden(lm, seq_tr, pad, a.batch), last_hidden(lm, seq_va, pad, a.batch)
        ver = Verifier(lm, head="linear")
        y = torch.tensor([float(r["is_correct"]) for r in train])
        l2 = ver.fit_linear_head(h_tr, y, torch.arange(len(train)))
        with torch.no_grad():
            probe = ver.linear(h_va).squeeze(-1).numpy()
        results["formats"][fmt] = {
            "linear_probe": ranking_metrics(probe, val), "probe_l2": l2,
            "token_head_projection": ranking_metrics((h_va @ token_row).numpy(), val),
            "mean_tokens": float(np.mean([len(s) for s in seq_tr + seq_va])), "seconds": round(time.time() - t0, 1)}
        print(fmt, json.dumps(results["formats"][fmt]), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
