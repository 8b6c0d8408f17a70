"""Sampling throughput: gsmv's HFSampler vs HF `generate` vs the released reference method.

    python benchmarks/bench_sampler.py                       # cpu-5m, 256 requests, 128 new tokens
    python benchmarks/bench_sampler.py --preset cpu-20m --requests 256 --new-tokens 64 --threads 2
    python benchmarks/bench_sampler.py --quick               # a smoke run: fewer, shorter samples
    python benchmarks/bench_sampler.py --samples-per-prompt 100 --skip hf reference   # the test split's shape

One model (a from-scratch preset with random weights: throughput does not depend on the
weights), one set of requests (the first GSM8K test questions as prompts, --samples-per-prompt
samples each, encoded like the sample stage), one generation length: every method decodes
exactly --new-tokens tokens per sample (EOS ignored), at temperature 0.7.

- gsmv HFSampler: continuous batching, per-request seeds, calculator on, batch --batch-size
  (the Llama fast path; --generic also times the engine every other architecture uses).
- HF generate: `model.generate(do_sample=True, min_new_tokens=max_new_tokens=L)` on left-padded
  batches of --batch-size (its default DynamicCache and SDPA attention).
- reference method: the released grade-school-math sampler's approach, re-implemented: batch 1,
  no KV cache, the whole prefix re-encoded for every new token. Timed on --reference-samples only.
- CTranslate2 (the CPU inference engine a user would otherwise reach for; `pip install -e ".[bench]"`): the same
  model converted with its Transformers converter, float32 and int8 weights, the same requests and token count
  (min_length = max_length), full-vocabulary sampling at the same temperature, batch --batch-size, the same
  threads; it has no calculator, so it does less work per sample than ours. Skipped when not installed.

Achieved GFLOP/s counts, per generated token, 2 · (N_non_embedding + d·V) for the weight
matmuls and the output projection, plus 4 · n_layer · d · ctx for attention scores and weighted
sums over the mean context ctx = mean prompt length + L/2 (KV-cached decoding; the reference
method does far more work per token than this, since it recomputes the whole prefix, but is
credited the same useful FLOPs). The roofline is one fp32 torch.matmul of --matmul-size square
matrices on the same threads.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from bench_common import matmul_gflops, print_speed_table

from gsmv.config import ModelConfig
from gsmv.data.gsm8k import format_prompt
from gsmv.models.loading import build_from_preset, count_params
from gsmv.models.tokenizer import encode_prompt, train_tokenizer
from gsmv.sampling.base import Request, SamplingParams, request_seed
from gsmv.sampling.hf import HFSampler

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"
TINY = Path(__file__).resolve().parents[1] / "tests" / "assets" / "tiny_gsm8k"


def load_texts(folder: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (folder / f"{split}.jsonl").read_text().splitlines()]


def reference_method(model, prompt: list[int], new_tokens: int, temperature: float, gen: torch.Generator) -> int:
    """Batch 1, no cache: every token re-runs the model on the whole prefix (the released sampler)."""
    ids = list(prompt)
    for _ in range(new_tokens):
        logits = model(torch.tensor([ids]), use_cache=False).logits[0, -1]
        probs = torch.softmax(logits / temperature, -1)
        ids.append(int(torch.multinomial(probs, 1, generator=gen)))
    return new_tokens


def ctranslate2_rows(model, tok, reqs, new_tokens: int, temperature: float, batch_size: int,
                     threads: int) -> list[tuple[str, int, int, float]]:
    """CTranslate2 float32 and int8 on the same requests (see the module docstring); [] without ctranslate2."""
    try:
        import ctranslate2
    except ImportError:
        print("# CTranslate2 not installed (pip install -e '.[bench]'): its rows are left out")
        return []
    import tempfile

    rows = []
    prompts = [tok.convert_ids_to_tokens(list(r.prompt_ids)) for r in reqs]
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = Path(tmp) / "hf"
        model.save_pretrained(hf_dir)
        tok.save_pretrained(hf_dir)
        for quant in ("float32", "int8"):
            out = Path(tmp) / f"ct2-{quant}"
            ctranslate2.converters.TransformersConverter(str(hf_dir)).convert(str(out), quantization=quant)
            # Our tokenizers have no BOS; CTranslate2's loader rejects a null one (it is never used here).
            conf = json.loads((out / "config.json").read_text())
            conf["bos_token"] = conf.get("bos_token") or conf["eos_token"]
            (out / "config.json").write_text(json.dumps(conf))
            gen = ctranslate2.Generator(str(out), device="cpu", compute_type=quant, inter_threads=1,
                                        intra_threads=threads)
            t0 = time.perf_counter()
            res = gen.generate_batch(prompts, max_batch_size=batch_size, max_length=new_tokens,
                                     min_length=new_tokens, sampling_topk=0, sampling_temperature=temperature,
                                     include_prompt_in_result=False)
            secs = time.perf_counter() - t0
            n = sum(len(r.sequences_ids[0]) for r in res)
            rows.append((f"CTranslate2 {quant} (no calculator)", batch_size, n, secs))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu-5m")
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--samples-per-prompt", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--reference-samples", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--matmul-size", type=int, default=1024)
    ap.add_argument("--skip", nargs="*", default=[], choices=["hf", "reference", "ct2"], help="methods to leave out")
    ap.add_argument("--generic", action="store_true", help="also time gsmv's generic (non-Llama) engine")
    ap.add_argument("--quick", action="store_true", help="256 requests, 32 new tokens, 1 reference sample")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.new_tokens, args.reference_samples = 256, 32, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = DATA if (DATA / "train.jsonl").is_file() else TINY
    train, test = load_texts(folder, "train"), load_texts(folder, "test")
    tok = train_tokenizer([t for r in train for t in (r["question"] + "\n", r["answer"])], 2048)
    torch.manual_seed(0)
    model = build_from_preset(ModelConfig(name=args.preset), tok).eval()
    params = count_params(model)
    cfg = model.config
    d, V, n_layer = cfg.hidden_size, cfg.vocab_size, cfg.num_hidden_layers

    n_prompts = -(-args.requests // args.samples_per_prompt)
    prompts = [tuple(encode_prompt(tok, format_prompt(test[i % len(test)]["question"]))) for i in range(n_prompts)]
    reqs = [Request(f"test-{i:05d}", j, prompts[i], request_seed(0, f"test-{i:05d}", j))
            for i in range(n_prompts) for j in range(args.samples_per_prompt)][: args.requests]
    L = args.new_tokens
    mean_prompt = sum(len(r.prompt_ids) for r in reqs) / len(reqs)
    flops_per_token = 2 * (params["non_embedding"] + d * V) + 4 * n_layer * d * (mean_prompt + L / 2)
    roof = matmul_gflops(args.matmul_size)
    print(f"# {args.preset}: {params['non_embedding'] / 1e6:.2f}M non-embedding params, d={d}, V={V}, "
          f"layers={n_layer}; {len(reqs)} requests ({args.samples_per_prompt}/prompt), mean prompt "
          f"{mean_prompt:.0f} tokens, {L} new tokens each; threads={torch.get_num_threads()}; "
          f"{platform.processor() or platform.machine()}")
    print(f"# roofline: fp32 matmul {args.matmul_size}^3 = {roof:.1f} GFLOP/s; "
          f"useful FLOPs/token = {flops_per_token / 1e6:.2f} M")

    results: list[tuple[str, int, int, float]] = []
    sp = SamplingParams(temperature=args.temperature, max_new_tokens=L, calculator=True, ignore_eos=True)
    sampler = HFSampler(model, tok, sp, batch_size=args.batch_size)
    t0 = time.perf_counter()
    n_tok = sum(s.n_tokens for s in sampler.generate(reqs))
    results.append((f"gsmv HFSampler ({'Llama fast path' if sampler.fast else 'generic'})", args.batch_size,
                    n_tok, time.perf_counter() - t0))

    if args.generic:
        generic = HFSampler(model, tok, sp, batch_size=args.batch_size, fast=False)
        t0 = time.perf_counter()
        n_gen = sum(s.n_tokens for s in generic.generate(reqs))
        results.append(("gsmv HFSampler (generic engine)", args.batch_size, n_gen, time.perf_counter() - t0))

    if "hf" not in args.skip:
        tok.padding_side = "left"
        gen_tokens = 0
        t0 = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(reqs), args.batch_size):
                chunk = reqs[i:i + args.batch_size]
                batch = tok.pad({"input_ids": [list(r.prompt_ids) for r in chunk]}, return_tensors="pt")
                out = model.generate(**batch, do_sample=True, temperature=args.temperature, top_p=1.0, top_k=0,
                                     max_new_tokens=L, min_new_tokens=L, pad_token_id=tok.pad_token_id)
                gen_tokens += (out.shape[1] - batch["input_ids"].shape[1]) * len(chunk)
        results.append(("HF generate", args.batch_size, gen_tokens, time.perf_counter() - t0))

    if "reference" not in args.skip and args.reference_samples > 0:
        g = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        with torch.inference_mode():
            n_ref = sum(reference_method(model, list(r.prompt_ids), L, args.temperature, g)
                        for r in reqs[: args.reference_samples])
        results.append(("reference method (no KV cache)", 1, n_ref, time.perf_counter() - t0))

    if "ct2" not in args.skip:
        results += ctranslate2_rows(model, tok, reqs, L, args.temperature, args.batch_size, torch.get_num_threads())

    ours = results[0][2] / results[0][3]
    by = print_speed_table(results, flops_per_token, roof)
    if "HF generate" in by:
        print(f"\nspeed-up over HF generate: {ours / by['HF generate']:.1f}x (target >= 5x)")
    if "reference method" in by:
        print(f"speed-up over the reference method: {ours / by['reference method']:.0f}x (target >= 100x)")
    print(f"achieved: {100 * ours * flops_per_token / 1e9 / roof:.0f}% of the matmul roofline (target >= 50%)")
    st = sampler.stats
    print(f"gsmv sampler: {st.steps} decode steps, mean batch {st.rows / max(st.steps, 1):.0f}, "
          f"{st.prefill_tokens} prompt tokens prefilled")


if __name__ == "__main__":
    main()
