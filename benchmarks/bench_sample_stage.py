"""The sample stage's sampler on a finished run: its generator, its splits, its sampling settings.

    python benchmarks/bench_sample_stage.py --run runs/synth                        # every split, batch 256 and 1024
    python benchmarks/bench_sample_stage.py --run runs/synth --splits test --problems 60 --batch-sizes 256 1024
    python benchmarks/bench_sample_stage.py --run runs/synth --splits train --problems 60 --per-problem 10 32 100

For each split (train, val, test as `gsmv sample` reads them: the same problems, samples per problem,
temperature, calculator and per-request seeds) and each batch size, the run's generator samples the first
--problems problems (0 = all) through `gsmv.sample.make_sampler`, the stage's own sampler; shards are not
written (a few ms a shard). Batch sizes of one split run back to back in one process, so a column of the
table compares them under the same machine load. To compare code versions, run the script once per version
(e.g. `PYTHONPATH=<other checkout>/src`) and compare the rows at the same batch size.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from gsmv.config import load_config
from gsmv.data.gsm8k import format_prompt
from gsmv.data.tasks import load_split
from gsmv.models.tokenizer import encode_prompt
from gsmv.sample import make_sampler, split_settings
from gsmv.sampling.base import Request, request_seed


def requests(cfg, split: str, sampler, problems: int, n: int) -> list[Request]:
    """n samples of each of the split's first `problems` problems (0 = all), as the stage asks for them."""
    source, _, _ = split_settings(cfg, split)
    probs = load_split(cfg, source)
    if split == "train" and cfg.sample.train_problems > 0:
        probs = probs[: cfg.sample.train_problems]
    if problems:
        probs = probs[:problems]
    tok = sampler.tokenizer
    return [Request(p.id, j, tuple(encode_prompt(tok, format_prompt(p.question))),
                    request_seed(cfg.sample.seed, p.id, j), p.answer) for p in probs for j in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a run folder with config.yaml and generator/final")
    ap.add_argument("--splits", nargs="+", default=["train", "val", "test"], choices=["train", "val", "test"])
    ap.add_argument("--problems", type=int, default=0, help="the first K problems of each split (0 = all)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--per-problem", type=int, nargs="+", default=[0],
                    help="samples per problem (0 = the split's own setting); with several, each runs at every batch size")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.run / "config.yaml")
    model_dir = args.run / "generator" / "final"
    print(f"# {args.run}: sample stage's sampler, threads={torch.get_num_threads()}, torch {torch.__version__}")
    print("| split | per problem | batch | samples | tokens | seconds | samples/s | tokens/s | vs first batch size |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for split in args.splits:
        _, n_split, params = split_settings(cfg, split)
        for n in [per or n_split for per in args.per_problem]:
            first = None
            for bs in args.batch_sizes:
                sampler = make_sampler(cfg, model_dir, params, batch_size=bs)
                reqs = requests(cfg, split, sampler, args.problems, n)
                t0 = time.perf_counter()
                n_tok = sum(s.n_tokens for s in sampler.generate(reqs))
                dt = time.perf_counter() - t0
                first = first or dt
                print(f"| {split} | {n} | {bs} | {len(reqs):,} | {n_tok:,} | {dt:.1f} | {len(reqs) / dt:,.0f} | "
                      f"{n_tok / dt:,.0f} | {first / dt:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
