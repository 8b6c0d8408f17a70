"""Scoring samples with a pretrained verifier (SmolLM2-135M): gsmv's scorer against a plain transformers forward
loop on the same sequences, side by side in one process.

    python benchmarks/bench_pretrained_score.py --model smollm2-135m --problems 8 --per-problem 16 --rounds 2

Sequences: synth problems with S samples each (the reference solution, so lengths are real) in the model's own
tokens. gsmv: Verifier.score_sequences with shared prompts (a problem's question is read once, its samples
continue from its KV cache), as the score stage runs it. Plain: right-padded batches of whole sequences through
the same LM (what a transformers sequence-classification loop does), the value read at each last token. Both
give the same values (checked); the unit is scored sequences per second.
"""

from __future__ import annotations

import argparse
import time

import torch

from gsmv.config import load_config
from gsmv.data.tasks import load_split
from gsmv.models.sources import resolve_model
from gsmv.models.tokenizer import encode_solution
from gsmv.models.verifier import build_verifier, pad_id_of, prompt_ids


@torch.no_grad()
def plain(ver, seqs: list[list[int]], batch_size: int, pad: int) -> list[float]:
    out = []
    for i in range(0, len(seqs), batch_size):
        chunk = seqs[i:i + batch_size]
        width = max(len(s) for s in chunk)
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in chunk])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in chunk])
        values = ver(ids, mask, return_logits=False).values
        out += [float(values[j, len(s) - 1]) for j, s in enumerate(chunk)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--per-problem", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ver, tok = build_verifier(resolve_model(a.model), head="linear")
    ver.eval()
    with torch.no_grad():
        ver.linear.weight.normal_(std=0.05)
    problems = load_split(load_config("synth"), "test")[: a.problems]
    seqs, starts = [], []
    for p in problems:
        prompt = prompt_ids(tok, p.question)
        for _ in range(a.per_problem):
            seqs.append(prompt + encode_solution(tok, p.solution))
            starts.append(len(prompt))
    pad = pad_id_of(tok)
    secs = {"plain transformers loop": 0.0, "gsmv score_sequences (shared prompts)": 0.0}
    for _ in range(a.rounds):
        t0 = time.perf_counter()
        want = plain(ver, seqs, a.batch_size, pad)
        secs["plain transformers loop"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        got = [v for v, _ in ver.score_sequences(seqs, starts, batch_size=a.batch_size, pad_id=pad, share_prompts=True)]
        secs["gsmv score_sequences (shared prompts)"] += time.perf_counter() - t0
        assert max(abs(x - y) for x, y in zip(got, want, strict=True)) < 1e-4
    n = len(seqs) * a.rounds
    mean_len = sum(map(len, seqs)) / len(seqs)
    print(f"{a.model}: {len(seqs)} sequences (mean {mean_len:.0f} tokens, prompt {sum(starts) / len(starts):.0f}) "
          f"x {a.rounds} rounds, batch {a.batch_size}, {a.threads} threads")
    print("| scorer | sequences/s | vs plain |")
    print("|---|---|---|")
    base = secs["plain transformers loop"]
    for k, s in secs.items():
        print(f"| {k} | {n / s:.2f} | {base / s:.2f}x |")


if __name__ == "__main__":
    main()
