"""Verifier throughput: scoring (the score stage's inner loop) and training steps, vs a matmul roofline.

    python benchmarks/bench_score.py                                   # cpu-5m (the cpu preset), 2 threads
    python benchmarks/bench_score.py --preset cpu-1m --samples 128 --batch-size 32 --threads 1
    python benchmarks/bench_score.py --run runs/synth --problems 64   # a run's own verifier and test samples

Random weights and random token ids with GSM8K-like lengths (prompt + solution between --min-len
and --max-len tokens): throughput does not depend on what the weights are.

Scoring runs gsmv.models.verifier.score_sequences (length-sorted batches, values only: the token
head reads one row of the unembedding, no vocabulary projection); the row "full logits" runs the
same batches through the plain LM forward (with the vocabulary projection) for comparison.
Sequences come in groups of --samples-per-prompt that share their first half (one problem's samples
share its prompt, as in the score stage); the row "score, shared prompts" scores the same sequences
with share_prompts=True (the score stage's path: each prompt read once per batch). Its tokens/s
counts every token scored, its GFLOP/s only the work done (solution tokens, plus each prompt once
per batch), so its % roofline says how well that work runs and tokens/s against the row above says
what sharing saves.
With --run, the table is instead the score stage's work on real data: that run's verifier on the test
samples of its first --problems problems, scored the plain way and with shared prompts, side by side.

Forward FLOPs per token are counted as

    2 · N_non_embedding + 2 · n_layer · L · d      (+ 2 · d · V for the full-logits row)

with L the mean sequence length (attention scores and weighted sums over a causal window count
half of a full L×L score matrix each, 2·(L/2)·d twice). Training steps are the verifier's
loss_fn (value MSE + LM loss on the solution half of each row) + backward + AdamW, counted as 3×
the forward FLOPs plus the LM projection on solution tokens. The roofline is the best FLOP/s of fp32 torch.matmul on the
same threads over square (--matmul-size, twice that) and model-shaped (tokens × hidden × MLP) matrices.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from bench_common import gsm8k_tokenizer

from gsmv.config import ModelConfig, VerifierConfig
from gsmv.models.loading import build_from_preset, count_params
from gsmv.models.verifier import Verifier, ensure_value_token, score_sequences
from gsmv.run_data import first_samples
from gsmv.train.loop import build_optimizer
from gsmv.train.verifier import collate_fn, make_example, make_loss_fn


def matmul_gflops(m: int, k: int, n: int, seconds: float = 0.5, repeats: int = 3) -> float:
    """Best of `repeats` windows: the CPU is shared, and the best window is the closest to the peak."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        torch.matmul(a, b)
    best = 0.0
    for _ in range(repeats):
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            torch.matmul(a, b)
            reps += 1
        best = max(best, 2 * m * k * n * reps / (time.perf_counter() - t0) / 1e9)
    return best


def forward_flops_per_token(lm, mean_len: float, with_vocab: bool) -> float:
    cfg = lm.config
    n = count_params(lm)["non_embedding"]
    f = 2.0 * n + 2.0 * cfg.num_hidden_layers * mean_len * cfg.hidden_size
    return f + (2.0 * cfg.hidden_size * cfg.vocab_size if with_vocab else 0.0)


def bench_run(args: argparse.Namespace) -> None:
    """Plain vs shared-prompt scoring of a run's own test samples with its verifier (the score stage's inner loop)."""
    from gsmv.artifacts import RunPaths
    from gsmv.models.verifier import load_verifier, pad_id_of, prompt_ids, solution_ids

    ver, tok = load_verifier(RunPaths(args.run).verifier_final)
    problems, rows = first_samples(args.run, "test", args.problems, ["problem_id", "tokens", "finished"])
    prompts = {pid: prompt_ids(tok, problems[pid].question) for pid in {r["problem_id"] for r in rows}}
    seqs = [prompts[r["problem_id"]] + solution_ids(r["tokens"], r["finished"], tok.eos_token_id) for r in rows]
    starts = [len(prompts[r["problem_id"]]) for r in rows]
    kw = dict(batch_size=args.batch_size, pad_id=pad_id_of(tok))
    n_tokens = sum(map(len, seqs))
    out = {}
    for share in (False, True, False, True):  # twice each, interleaved: the second of each is reported
        t0 = time.perf_counter()
        out[share] = (score_sequences(ver, seqs, starts, share_prompts=share, **kw), time.perf_counter() - t0)
    diff = max(abs(a[0] - b[0]) for a, b in zip(out[False][0], out[True][0], strict=True))
    print(f"# bench_score --run {args.run}: {len(prompts)} problems, {len(seqs)} samples, mean {n_tokens / len(seqs):.0f} "
          f"tokens (prompt {sum(starts) / len(seqs):.0f}), batch {args.batch_size}, {args.threads} threads, torch "
          f"{torch.__version__}; largest |score difference| {diff:.1e}")
    print(f"| {'what':<22} | {'seconds':>8} | {'samples/s':>10} | {'tokens/s':>10} |")
    print(f"|{'-' * 24}|{'-' * 10}|{'-' * 12}|{'-' * 12}|")
    for share, name in ((False, "score (plain)"), (True, "score, shared prompts")):
        dt = out[share][1]
        print(f"| {name:<22} | {dt:>8.1f} | {len(seqs) / dt:>10.1f} | {n_tokens / dt:>10.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu-5m")
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--min-len", type=int, default=120)
    ap.add_argument("--max-len", type=int, default=320)
    ap.add_argument("--samples-per-prompt", type=int, default=64)
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--train-batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--matmul-size", type=int, default=1024)
    ap.add_argument("--run", default="", help="score this run's test samples with its verifier instead")
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--profile", action="store_true",
                    help="also print torch.profiler's table of the plain scoring pass (where its time goes)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.run:
        return bench_run(args)

    tok = gsm8k_tokenizer(args.vocab)
    torch.manual_seed(0)
    lm = build_from_preset(ModelConfig(name=args.preset, vocab_size=args.vocab), tok)
    ver = Verifier(lm, head="token", value_token_id=ensure_value_token(lm, tok), tokenizer=tok).eval()
    rng = np.random.default_rng(0)
    lens = rng.integers(args.min_len, args.max_len + 1, size=args.samples)
    seqs = [rng.integers(0, len(tok) - 3, size=int(n)).tolist() for n in lens]
    starts = [int(n) // 2 for n in lens]
    k = args.samples_per_prompt
    for i in range(len(seqs)):  # the group's first sequence gives the prompt (its first half)
        g = i - i % k
        seqs[i] = seqs[g][:starts[g]] + seqs[i][starts[i]:]
        starts[i] = starts[g]
    lens = np.array([len(x) for x in seqs])
    n_tokens = int(lens.sum())
    mean_len = float(lens.mean())
    n = args.matmul_size
    # Square matrices, and the model's own MLP shape (a batch of tokens × hidden → intermediate).
    shapes = [(n, n, n), (2 * n, 2 * n, 2 * n),
              (args.batch_size * int(mean_len), lm.config.hidden_size, lm.config.intermediate_size)]
    roofs = {s_: matmul_gflops(*s_) for s_ in shapes}
    roof = max(roofs.values())

    rows = []
    score_sequences(ver, seqs[: args.batch_size], starts[: args.batch_size], batch_size=args.batch_size,
                    pad_id=tok.pad_token_id)  # warm-up
    t0 = time.perf_counter()
    score_sequences(ver, seqs, starts, batch_size=args.batch_size, pad_id=tok.pad_token_id)
    dt = time.perf_counter() - t0
    gf = forward_flops_per_token(lm, mean_len, with_vocab=False) * n_tokens / dt / 1e9
    rows.append(("score (values only)", args.samples / dt, n_tokens / dt, gf))
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            score_sequences(ver, seqs, starts, batch_size=args.batch_size, pad_id=tok.pad_token_id)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=40))

    score_sequences(ver, seqs[:k], starts[:k], batch_size=args.batch_size, pad_id=tok.pad_token_id,
                    share_prompts=True)  # warm-up
    t0 = time.perf_counter()
    score_sequences(ver, seqs, starts, batch_size=args.batch_size, pad_id=tok.pad_token_id, share_prompts=True)
    dt = time.perf_counter() - t0
    done = sum(len(x) - st for x, st in zip(seqs, starts, strict=True))  # solution tokens
    for g in range(0, len(seqs), k):  # each group's prompt, once per batch
        done += starts[g] * -(-len(seqs[g:g + k]) // args.batch_size)
    gf = forward_flops_per_token(lm, mean_len, with_vocab=False) * done / dt / 1e9
    rows.append(("score, shared prompts", args.samples / dt, n_tokens / dt, gf))

    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(order), args.batch_size):
            batch = [seqs[j] for j in order[i:i + args.batch_size]]
            width = max(map(len, batch))
            ids = torch.tensor([b + [tok.pad_token_id] * (width - len(b)) for b in batch])
            mask = torch.tensor([[1] * len(b) + [0] * (width - len(b)) for b in batch])
            lm(input_ids=ids, attention_mask=mask, use_cache=False)
    dt = time.perf_counter() - t0
    gf = forward_flops_per_token(lm, mean_len, with_vocab=True) * n_tokens / dt / 1e9
    rows.append(("LM forward, full logits", args.samples / dt, n_tokens / dt, gf))

    vcfg = VerifierConfig(lr=1e-3)
    ver.train()
    loss_fn = make_loss_fn(vcfg)
    opt = build_optimizer(ver, vcfg)
    collate = collate_fn(tok.pad_token_id)
    examples = [make_example(s[:st], s[st:], float(i % 2), max_len=args.max_len, level="token")[0]
                for i, (s, st) in enumerate(zip(seqs, starts, strict=True))]
    bs = args.train_batch_size
    times, toks = [], []
    for step in range(args.train_steps + 1):
        batch = collate(examples[(step * bs) % len(examples):][:bs])
        t0 = time.perf_counter()
        loss, _ = loss_fn(ver, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step:  # the first step warms up
            times.append(time.perf_counter() - t0)
            toks.append(int(batch["attention_mask"].sum()))
    dt, nt = sum(times), sum(toks)
    cfg = lm.config
    # 3 × forward (values) + the LM projection forward and backward on the solution half of the tokens.
    train_f = 3 * forward_flops_per_token(lm, mean_len, with_vocab=False) + 0.5 * 6 * cfg.hidden_size * cfg.vocab_size
    rows.append(("train step (value+LM)", bs * len(times) / dt, nt / dt, train_f * nt / dt / 1e9))

    params = count_params(lm)
    print(f"# bench_score: preset {args.preset} ({params['non_embedding'] / 1e6:.2f}M non-embedding, vocab "
          f"{cfg.vocab_size}), {args.samples} samples of {args.min_len}-{args.max_len} tokens (mean {mean_len:.0f}), "
          f"{args.samples_per_prompt} per prompt, batch {args.batch_size}, {args.threads} threads, torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print("# fp32 matmul roofline (best): " + ", ".join(f"{m}x{k}x{n_}: {g:.1f}" for (m, k, n_), g in roofs.items())
          + f" GFLOP/s → {roof:.1f}")
    print(f"| {'what':<26} | {'samples/s':>10} | {'tokens/s':>10} | {'GFLOP/s':>8} | {'% roofline':>10} |")
    print(f"|{'-' * 28}|{'-' * 12}|{'-' * 12}|{'-' * 10}|{'-' * 12}|")
    for name, sps, tps, g in rows:
        print(f"| {name:<26} | {sps:>10.1f} | {tps:>10.0f} | {g:>8.2f} | {100 * g / roof:>9.1f}% |")


if __name__ == "__main__":
    main()
