"""Verifier training throughput, plain rows against shared-prompt packing, side by side in one process.

    python benchmarks/bench_verifier_train.py --run runs/synth-v100 --presets cpu-1m cpu-5m --per-problem 10 100

The examples are the stage's own (gsmv.train.verifier.build_examples: a value example per train sample of the
run, plus the paper's equal mix of reference-solution LM examples) of the first problems of RUN's train samples,
S samples per problem. Batches are the stage's too: verifier.batch_size examples, group_samples = S (a batch
holds up to S samples of a problem, with its LM example). Each step is forward, backward, clipping and AdamW
on a freshly initialised preset model (speed does not depend on the weights). Arms alternate batch by batch
so that a change of machine load hits both; value examples per second count the value examples only.
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_common import matmul_gflops

from gsmv.artifacts import RunPaths
from gsmv.config import ModelConfig, VerifierConfig, load_config
from gsmv.data.tasks import load_split
from gsmv.models.loading import build_from_preset
from gsmv.models.tokenizer import encode_solution
from gsmv.models.verifier import Verifier, ensure_value_token, prompt_ids
from gsmv.train import verifier as tv
from gsmv.train.loop import batch_plan, build_optimizer


def examples_for(run: str, tok, per_problem: int, n_value: int, vcfg: VerifierConfig) -> tuple[list[dict], list]:
    cfg = load_config(RunPaths(run).config)
    train = load_split(cfg, "train")
    prompts = {p.id: prompt_ids(tok, p.question) for p in train}
    rows = tv.read_samples(RunPaths(run).samples("train"), prompts, "train", tok)
    by: dict[str, list] = {}
    for r in rows:
        by.setdefault(r["problem_id"], []).append(r)
    chosen = []
    for rs in by.values():
        if len(rs) >= per_problem:
            chosen += rs[:per_problem]
        if len(chosen) >= n_value:
            break
    refs = [(p.id, prompts[p.id], encode_solution(tok, p.solution)) for p in train if p.id in by]
    examples, _, _, _ = tv.build_examples(chosen, refs, vcfg, tok, 320)
    return examples, tv.batch_groups([ex.get("group", -1) for ex in examples], vcfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/synth-v100")
    ap.add_argument("--presets", nargs="+", default=["cpu-1m", "cpu-5m"])
    ap.add_argument("--per-problem", nargs="+", type=int, default=[10, 100])
    ap.add_argument("--pack-tokens", nargs="+", type=int, default=[512, 1024, 2048])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=12, help="measured steps per arm")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(RunPaths(a.run).tokenizer)
    peak = matmul_gflops(1024)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 matmul {peak:.0f} GFLOP/s; "
          f"batch {a.batch_size} examples, {a.steps} steps an arm, run {a.run}")
    print("| preset | samples/problem | layout | value ex/s | tokens read/step | rows/step | s/step | speed-up |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for preset in a.presets:
        for s in a.per_problem:
            vcfg = VerifierConfig(batch_size=a.batch_size, group_samples=s, lm_weight=1.0, dropout=0.2)
            examples, groups = examples_for(a.run, tok, s, a.batch_size * (a.steps + 2) * 2, vcfg)
            plan = batch_plan([len(e["input_ids"]) for e in examples], a.batch_size, 0, 0, groups=groups)
            plan = plan[:a.steps + 2]
            arms = {"plain": tv.collate_fn(tok.pad_token_id, 0)}
            arms |= {f"packed {b}": tv.collate_fn(tok.pad_token_id, b) for b in a.pack_tokens}
            torch.manual_seed(0)
            lm = build_from_preset(ModelConfig(name=preset), tok)
            ver = Verifier(lm, head="token", value_token_id=ensure_value_token(lm, tok), tokenizer=tok)
            ver.train()
            opt = build_optimizer(ver, vcfg)
            loss_fn = tv.make_loss_fn(vcfg)
            times = {k: 0.0 for k in arms}
            stats = {k: [0, 0, 0] for k in arms}  # value examples, tokens, rows
            for j, ids in enumerate(plan):
                exs = [examples[i] for i in ids]
                for name, collate in arms.items():
                    t0 = time.perf_counter()
                    batch = collate(exs)
                    loss, _ = loss_fn(ver, batch)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(ver.parameters(), 1.0)
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    dt = time.perf_counter() - t0
                    if j >= 2:  # warm-up
                        times[name] += dt
                        st = stats[name]
                        st[0] += sum(1 for e in exs if e.get("outcome", -1) >= 0)
                        st[1] += int(batch["n_tokens"])
                        st[2] += batch["input_ids"].shape[0]
            base = stats["plain"][0] / times["plain"]
            for name in arms:
                n_val, n_tok, n_rows = stats[name]
                rate = n_val / times[name]
                print(f"| {preset} | {s} | {name} | {rate:.0f} | {n_tok / a.steps:.0f} | {n_rows / a.steps:.1f} | "
                      f"{times[name] / a.steps:.3f} | {rate / base:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
