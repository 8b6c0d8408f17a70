"""Sampling throughput on SmolLM2-135M: gsmv's fast engine vs HF `generate` vs CTranslate2 int8 (issue 45).

    python benchmarks/bench_smol_sampler.py                                 # SmolLM2-135M, 16 problems x 4
    python benchmarks/bench_smol_sampler.py --model runs/NAME/generator/final --problems 32 --samples-per-prompt 8
    python benchmarks/bench_smol_sampler.py --problems 2 --max-new-tokens 8 --threads 1   # a smoke run

One model (--model: a name gsmv.models.sources resolves, by default SmolLM2-135M from gsmv's model cache,
converted there on first use; or a folder such as a fine-tuned generator), one set of requests (the first
--problems `synth` test questions, --samples-per-prompt samples each, encoded as the sample stage encodes them),
one generation length: every method decodes exactly --max-new-tokens tokens per sample (EOS ignored), at
temperature --temperature (0.7), full vocabulary (top-p 1, no top-k), batch --batch-size, the same threads.

- gsmv HFSampler: the Llama fast engine (continuous batching, a problem's samples sharing its prompt cache,
  per-request seeds), calculator on, as the sample stage runs it.
- HF generate: `model.generate(do_sample=True, min_new_tokens=max_new_tokens=L)` on left-padded batches of
  --batch-size (its default DynamicCache and SDPA attention). It has no calculator, so it does less work per
  sample than ours (no `=` checks, no forced tokens).
- CTranslate2 (`pip install -e ".[bench]"`; skipped when not installed): the model folder converted with its
  Transformers converter at --ct2-quant (int8 by default; conversion not timed), the same prompts and token
  count (min_length = max_length), full-vocabulary sampling. No calculator either.

Achieved GFLOP/s counts, per generated token, 2 · (N_non_embedding + d·V) for the weight matmuls and the output
projection, plus 4 · n_layer · H·D · ctx for attention over the mean context ctx = mean prompt length + L/2; the
roofline is one fp32 torch.matmul of --matmul-size square matrices on the same threads (bench_common).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from bench_common import matmul_gflops, print_speed_table

from gsmv.config import load_config
from gsmv.data.gsm8k import format_prompt
from gsmv.data.tasks import load_split
from gsmv.models.loading import count_params, load_model_and_tokenizer
from gsmv.models.sources import resolve_model
from gsmv.models.tokenizer import encode_prompt
from gsmv.sampling.base import Request, SamplingParams, request_seed
from gsmv.sampling.hf import HFSampler

Row = tuple[str, int, int, float]  # (method, batch, tokens generated, seconds)


def hf_generate(model, tok, reqs: list[Request], new_tokens: int, temperature: float, batch_size: int) -> Row:
    tok.padding_side = "left"  # generate continues every row from the batch's right edge
    n, t0 = 0, time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(reqs), batch_size):
            chunk = reqs[i:i + batch_size]
            batch = tok.pad({"input_ids": [list(r.prompt_ids) for r in chunk]}, return_tensors="pt")
            # top_k=0: the generation config's default top-k 50 would sample from fewer tokens than the others
            out = model.generate(**batch, do_sample=True, temperature=temperature, top_p=1.0, top_k=0,
                                 max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=tok.pad_token_id)
            n += (out.shape[1] - batch["input_ids"].shape[1]) * len(chunk)
    return "HF generate (no calculator)", batch_size, n, time.perf_counter() - t0


def ctranslate2_rows(folder: str, tok, reqs: list[Request], new_tokens: int, temperature: float, batch_size: int,
                     threads: int, quants: list[str]) -> list[Row]:
    """CTranslate2 at each of `quants` on the same requests; [] (with a note) when it is not installed."""
    try:
        import ctranslate2
    except ImportError:
        print("# CTranslate2 not installed (pip install -e '.[bench]'): its rows are left out")
        return []
    rows = []
    prompts = [tok.convert_ids_to_tokens(list(r.prompt_ids)) for r in reqs]
    with tempfile.TemporaryDirectory() as tmp:
        for quant in quants:
            out = Path(tmp) / f"ct2-{quant}"
            t0 = time.perf_counter()
            ctranslate2.converters.TransformersConverter(folder).convert(str(out), quantization=quant)
            # gsmv's own tokenizers have no BOS; CTranslate2's loader rejects a null one (it is never used here).
            conf = json.loads((out / "config.json").read_text())
            conf["bos_token"] = conf.get("bos_token") or conf["eos_token"]
            (out / "config.json").write_text(json.dumps(conf))
            print(f"# CTranslate2 {quant}: converted in {time.perf_counter() - t0:.1f} s (not timed below)")
            gen = ctranslate2.Generator(str(out), device="cpu", compute_type=quant, inter_threads=1,
                                        intra_threads=threads)
            t0 = time.perf_counter()
            res = gen.generate_batch(prompts, max_batch_size=batch_size, max_length=new_tokens,
                                     min_length=new_tokens, sampling_topk=0, sampling_temperature=temperature,
                                     include_prompt_in_result=False)
            secs = time.perf_counter() - t0
            rows.append((f"CTranslate2 {quant} (no calculator)", batch_size,
                         sum(len(r.sequences_ids[0]) for r in res), secs))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="model name or folder (a fine-tuned generator)")
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--samples-per-prompt", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--threads", type=int, default=2, help="torch and CTranslate2 threads")
    ap.add_argument("--matmul-size", type=int, default=1024)
    ap.add_argument("--ct2-quant", nargs="+", default=["int8"], choices=["int8", "float32", "int8_float32"])
    ap.add_argument("--skip", nargs="*", default=[], choices=["hf", "ct2"], help="methods to leave out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    folder = resolve_model(args.model)
    model, tok = load_model_and_tokenizer(folder, dtype=torch.float32, device="cpu")
    cfg = model.config
    d, V, n_layer = cfg.hidden_size, cfg.vocab_size, cfg.num_hidden_layers
    attn_width = cfg.num_attention_heads * (getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads)
    non_emb = count_params(model)["non_embedding"]

    problems = load_split(load_config("synth"), "test")[: args.problems]
    reqs = [Request(p.id, j, tuple(encode_prompt(tok, format_prompt(p.question))), request_seed(0, p.id, j))
            for p in problems for j in range(args.samples_per_prompt)]
    L = args.max_new_tokens
    mean_prompt = sum(len(r.prompt_ids) for r in reqs) / len(reqs)
    flops_per_token = 2 * (non_emb + d * V) + 4 * n_layer * attn_width * (mean_prompt + L / 2)
    roof = matmul_gflops(args.matmul_size)
    print(f"# {args.model} ({folder}): {non_emb / 1e6:.1f}M non-embedding params, d={d}, V={V}, layers={n_layer}, "
          f"heads {cfg.num_attention_heads}/{getattr(cfg, 'num_key_value_heads', cfg.num_attention_heads)} kv; "
          f"{len(reqs)} requests ({args.samples_per_prompt}/prompt), mean prompt {mean_prompt:.0f} tokens, {L} new "
          f"tokens each, T={args.temperature}; threads={torch.get_num_threads()}; "
          f"{platform.processor() or platform.machine()}")
    print(f"# roofline: fp32 matmul {args.matmul_size}^3 = {roof:.1f} GFLOP/s; "
          f"useful FLOPs/token = {flops_per_token / 1e6:.1f} M")

    batch = min(args.batch_size, len(reqs))  # what every method really runs at (HFSampler caps its slots so)
    results: list[Row] = []
    sp = SamplingParams(temperature=args.temperature, max_new_tokens=L, calculator=True, ignore_eos=True)
    sampler = HFSampler(model, tok, sp, batch_size=batch)
    t0 = time.perf_counter()
    n_tok = sum(s.n_tokens for s in sampler.generate(reqs))
    results.append((f"gsmv HFSampler ({'Llama fast path' if sampler.fast else 'generic'})", batch,
                    n_tok, time.perf_counter() - t0))
    if "hf" not in args.skip:
        results.append(hf_generate(model, tok, reqs, L, args.temperature, batch))
    if "ct2" not in args.skip:
        results += ctranslate2_rows(folder, tok, reqs, L, args.temperature, batch,
                                    torch.get_num_threads(), args.ct2_quant)

    ours = results[0][2] / results[0][3]
    by = print_speed_table(results, flops_per_token, roof)
    if "HF generate" in by:
        print(f"\nspeed-up over HF generate: {ours / by['HF generate']:.2f}x (target >= 3x)")
    if "CTranslate2 int8" in by:
        print(f"against CTranslate2 int8: {ours / by['CTranslate2 int8']:.2f}x (target >= 1x)")
    st = sampler.stats
    print(f"gsmv sampler: {st.steps} decode steps, mean batch {st.rows / max(st.steps, 1):.0f}, "
          f"{st.prefill_tokens} prompt tokens prefilled")


if __name__ == "__main__":
    main()
