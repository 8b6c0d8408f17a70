"""Training throughput of the from-scratch presets vs a measured fp32 matmul roofline.

    python benchmarks/bench_train.py                      # cpu-1m, cpu-5m, cpu-20m
    python benchmarks/bench_train.py --presets cpu-5m --steps 20 --batch-size 16 --seq-len 256 --threads 2

Each step is a full training step of gsmv.train.loop (forward, backward, clipping, AdamW) on a
batch of random token ids. Achieved FLOP/s counts, per token,

    6 · (N_non_embedding + d·V) + 6 · n_layer · seq_len · d

(gsmv.models.loading.train_flops_per_token: weight matmuls forward + backward, the output
projection, and attention scores / weighted sums over the full seq_len window). The roofline is
the FLOP/s of one fp32 torch.matmul of --matmul-size square matrices on the same threads.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from bench_common import gsm8k_tokenizer, matmul_gflops

from gsmv.config import ModelConfig, TrainConfig
from gsmv.models.loading import build_from_preset, count_params, train_flops_per_token
from gsmv.train.loop import build_optimizer, causal_lm_loss


def bench(preset: str, tok, args) -> dict:
    torch.manual_seed(0)
    model = build_from_preset(ModelConfig(name=preset), tok)
    model.train()
    tcfg = TrainConfig(lr=1e-3)
    opt = build_optimizer(model, tcfg)
    ids = torch.randint(0, len(tok), (args.batch_size, args.seq_len))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}

    def step() -> None:
        loss, _ = causal_lm_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    dt = time.perf_counter() - t0
    tokens = args.steps * args.batch_size * args.seq_len
    tps = tokens / dt
    fpt = train_flops_per_token(model, args.seq_len)
    return {"preset": preset, "non_emb": count_params(model)["non_embedding"], "flops_per_token": fpt,
            "tokens_per_s": tps, "gflops": tps * fpt / 1e9, "step_s": dt / args.steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["cpu-1m", "cpu-5m", "cpu-20m"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--matmul-size", type=int, default=1024)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = matmul_gflops(args.matmul_size)
    tok = gsm8k_tokenizer(args.vocab)
    rows = [bench(p, tok, args) for p in args.presets]
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"batch {args.batch_size} × seq {args.seq_len}, vocab {len(tok)}, {args.steps} steps")
    print(f"# fp32 matmul roofline ({args.matmul_size}³): {peak:.1f} GFLOP/s")
    print(f"| {'preset':8} | {'non-emb params':>14} | {'MFLOP/token':>11} | {'tokens/s':>9} | {'s/step':>7} "
          f"| {'GFLOP/s':>7} | {'% of matmul':>11} |")
    print(f"|{'-' * 10}|{'-' * 16}|{'-' * 13}|{'-' * 11}|{'-' * 9}|{'-' * 9}|{'-' * 13}|")
    for r in rows:
        print(f"| {r['preset']:8} | {r['non_emb'] / 1e6:13.2f}M | {r['flops_per_token'] / 1e6:11.1f} "
              f"| {r['tokens_per_s']:9.0f} | {r['step_s']:7.3f} | {r['gflops']:7.1f} | {100 * r['gflops'] / peak:10.1f}% |")


if __name__ == "__main__":
    main()
