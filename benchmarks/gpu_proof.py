"""One-command proof of the GPU paths, for a session that is lent a CUDA machine (about 8 minutes, no hub).

    python benchmarks/gpu_proof.py [--out /tmp/gsmv-gpu]

1. `gsmv run --config smoke-synth device=cuda`: a tiny model and tokenizer made locally, CUDA fine-tuning and
   verifier training through accelerate, HF sampling with the calculator, scoring, evaluate.
2. The HF sampler against vLLM (if installed) on the run's generator at T=0: same texts on the first test prompts.
3. The run's verifier exported (`gsmv export --to seq-cls`), scored by transformers on CUDA and by vLLM's
   pooling runner, against gsmv's own scores of the same samples.

Prints one table (step, result, seconds). Without CUDA it says so and exits 0. Written on a CPU machine:
steps 2 and 3 have not run yet; each is wrapped so one failure still lets the others report.
"""

from __future__ import annotations

import argparse
import time
import traceback
from pathlib import Path


def main() -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/gsmv-gpu")
    ap.add_argument("--prompts", type=int, default=16)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("gpu_proof: no CUDA device here; skipped")
        return 0
    rows: list[tuple[str, str, float]] = []

    def step(name: str, fn) -> None:
        t0 = time.perf_counter()
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - report and go on to the next path
            traceback.print_exc()
            result = f"FAILED: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
        rows.append((name, str(result), time.perf_counter() - t0))

    from gsmv import cli

    out = Path(a.out)
    run = out / "smoke-synth"

    def pipeline() -> str:
        rc = cli.main(["run", "--config", "smoke-synth", f"out_dir={out}", "device=cuda"])
        import json

        res = json.loads((run / "results.json").read_text())["metrics"]
        return f"rc {rc}; test@1 {res['test@1']['value']:.3f}, best-of-N {res['best_of_n']['value']:.3f}"

    step("gsmv run smoke-synth on CUDA", pipeline)

    def prompts() -> list[tuple[int, ...]]:
        from transformers import AutoTokenizer

        from gsmv.config import load_config
        from gsmv.data.tasks import load_split
        from gsmv.models.verifier import prompt_ids

        tok = AutoTokenizer.from_pretrained(run / "generator" / "final")
        probs = load_split(load_config(run / "config.yaml"), "test")[:a.prompts]
        return [tuple(prompt_ids(tok, p.question)) for p in probs]

    def samplers() -> str:
        from gsmv.config import load_config
        from gsmv.sample import make_sampler
        from gsmv.sampling.base import Request, SamplingParams

        cfg = load_config(run / "config.yaml", ["device=cuda"])
        params = SamplingParams(temperature=0.0, max_new_tokens=cfg.sample.max_new_tokens, calculator=True)
        reqs = [Request(problem_id=str(i), sample_idx=0, prompt_ids=p, seed=i) for i, p in enumerate(prompts())]
        hf = {s.problem_id: s.text for s in make_sampler(cfg, run / "generator" / "final", params).generate(reqs)}
        cfg.sample.backend = "vllm"
        vl = {s.problem_id: s.text for s in make_sampler(cfg, run / "generator" / "final", params).generate(reqs)}
        same = sum(hf[k] == vl[k] for k in hf)
        return f"greedy texts equal: {same}/{len(hf)}"

    step("HF sampler vs vLLM (T=0, calculator on)", samplers)

    def export_scores() -> str:
        import numpy as np
        import pyarrow.parquet as pq

        from gsmv.artifacts import list_shards
        from gsmv.export import export, load_exported

        exp = export(run / "verifier" / "final", "seq-cls", out / "export-seq-cls")
        model, tok = load_exported(exp)
        model.to("cuda")
        shard = list_shards(run / "scores" / "test")[0]
        table = pq.read_table(shard).to_pylist()[:64]
        samples = {(r["problem_id"], r["sample_idx"]): r for s in list_shards(run / "samples" / "test")
                   for r in pq.read_table(s).to_pylist()}
        from gsmv.config import load_config
        from gsmv.data.tasks import load_split
        from gsmv.models.verifier import prompt_ids, solution_ids

        probs = {p.id: p for p in load_split(load_config(run / "config.yaml"), "test")}
        diffs, seqs = [], []
        for r in table:
            s = samples[(r["problem_id"], r["sample_idx"])]
            seq = prompt_ids(tok, probs[r["problem_id"]].question) + solution_ids(s["tokens"], s["finished"],
                                                                                   tok.eos_token_id)
            seqs.append(seq)
            with torch.no_grad():
                logit = model(input_ids=torch.tensor([seq], device="cuda")).logits[0, 0].float().item()
            diffs.append(abs(1 / (1 + np.exp(-(logit + model.config.value_bias))) - r["score"]))
        msg = f"transformers on CUDA vs gsmv scores: max |diff| {max(diffs):.2e} over {len(diffs)}"
        try:
            from vllm import LLM, TokensPrompt

            llm = LLM(model=str(exp), runner="pooling", enforce_eager=True, gpu_memory_utilization=0.3)
            outs = llm.classify([TokensPrompt(prompt_token_ids=s) for s in seqs])
            got = [float(o.outputs.probs[0]) if hasattr(o.outputs, "probs") else float(o.outputs.data[0])
                   for o in outs]
            msg += f"; vLLM pooling vs gsmv: first {got[0]:.4f} vs {table[0]['score']:.4f}"
        except Exception as e:  # noqa: BLE001
            msg += f"; vLLM pooling FAILED: {type(e).__name__}: {str(e)[:100]}"
        return msg

    step("exported verifier: transformers and vLLM pooling", export_scores)
    print("| step | result | seconds |\n|---|---|---:|")
    for name, result, sec in rows:
        print(f"| {name} | {result} | {sec:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
