"""Helpers shared by the benchmark scripts: the matmul roofline and a GSM8K-trained tokenizer."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from gsmv.models.tokenizer import train_tokenizer

GSM8K_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "train.jsonl"
TINY_TRAIN = Path(__file__).resolve().parents[1] / "tests" / "assets" / "tiny_gsm8k" / "train.jsonl"


def matmul_gflops(n: int, seconds: float = 1.0) -> float:
    """fp32 FLOP/s of one n×n×n torch.matmul on the current threads: the roofline we compare against."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        torch.matmul(a, b)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.matmul(a, b)
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def gsm8k_tokenizer(vocab: int):
    """The from-scratch BPE trained on GSM8K train text (the tiny synthetic set when GSM8K is absent)."""
    src = GSM8K_TRAIN if GSM8K_TRAIN.is_file() else TINY_TRAIN
    texts = []
    for line in src.read_text().splitlines():
        rec = json.loads(line)
        texts += [rec["question"] + "\n", rec["answer"]]
    return train_tokenizer(texts, vocab)


def print_speed_table(results: list[tuple[str, int, int, float]], flops_per_token: float, roof: float) -> dict:
    """The samplers' table (method, batch, tokens, seconds, tokens/s, ratio to the first row, GFLOP/s, share of
    the matmul roofline) printed in markdown; returns tokens/s by method name (without its parenthesis)."""
    ours = results[0][2] / results[0][3]
    w = max(34, *(len(r[0]) for r in results))
    print()
    print(f"| {'method':<{w}} | batch | tokens | seconds | tokens/s | vs ours | GFLOP/s | % roofline |")
    print(f"|{'-' * (w + 2)}|------:|-------:|--------:|---------:|--------:|--------:|-----------:|")
    for name, batch, n, secs in results:
        tps = n / secs
        gf = tps * flops_per_token / 1e9
        print(f"| {name:<{w}} | {batch:>5} | {n:>6} | {secs:>7.1f} | {tps:>8.0f} | {tps / ours:>7.3f} | "
              f"{gf:>7.1f} | {100 * gf / roof:>9.1f}% |")
    return {name.split(" (")[0]: n / secs for name, _, n, secs in results}

