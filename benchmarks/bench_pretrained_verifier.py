"""Training a pretrained verifier (SmolLM2-135M) on 2 cores: full fine-tuning against the top K layers only (and
LoRA through peft when it is installed), side by side in one process.

    python benchmarks/bench_pretrained_verifier.py --model smollm2-135m --modes full top4 top2 lora --steps 6

Examples are synth problems with their reference solutions as the "samples" (question + solution in the model's
own tokens, random 0/1 labels: speed does not depend on them), built by the stage's own build_examples with the
LM half at verifier.lm_ratio, packed as the stage packs them. Each step is the stage's loss (value + joint LM),
backward, clipping and AdamW. Arms alternate step by step so that a change of machine load hits all of them;
the table gives value examples per second, trainable parameters and the optimizer state they need.
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from gsmv.config import load_config
from gsmv.data.tasks import load_split
from gsmv.models.tokenizer import encode_solution
from gsmv.models.verifier import build_verifier, pad_id_of, prompt_ids
from gsmv.train import verifier as tv
from gsmv.train.loop import build_optimizer


def make_arm(mode: str, model: str, head: str, dropout: float = 0.0):
    """(verifier, tokenizer) in training mode: full, topK (gsmv's verifier.train_layers=K) or lora (peft)."""
    ver, tok = build_verifier(model, head=head, dropout=dropout)
    if mode.startswith("top"):
        tv.freeze_lower_layers(ver, int(mode[3:]))
    elif mode == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        # In place (no wrapper), so the verifier's forward still reaches the LM's trunk for hidden states.
        inject_adapter_in_model(LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"]), ver.lm)
        for name, p in ver.lm.named_parameters():
            p.requires_grad_("lora_" in name)
    ver.train()
    return ver, tok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--modes", nargs="+", default=["full", "top4", "top2"])
    ap.add_argument("--head", default="linear")
    ap.add_argument("--problems", type=int, default=8, help="problems per batch")
    ap.add_argument("--per-problem", type=int, default=4, help="samples per problem (a batch's group)")
    ap.add_argument("--steps", type=int, default=6, help="measured steps per arm (after one warm-up step)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = load_config("synth", ["verifier.lm_ratio=0.1", f"verifier.group_samples={a.per_problem}"])
    problems = load_split(cfg, "train")[: a.problems * (a.steps + 1)]
    arms = {m: make_arm(m, a.model, a.head) for m in a.modes}
    tok = next(iter(arms.values()))[1]
    rng = random.Random(0)
    rows = [{"problem_id": p.id, "prompt": prompt_ids(tok, p.question), "tokens": encode_solution(tok, p.solution),
             "label": rng.random() < 0.5, "wrong_char": None} for p in problems for _ in range(a.per_problem)]
    refs = [(p.id, prompt_ids(tok, p.question), encode_solution(tok, p.solution)) for p in problems]
    examples, n_value, _, _ = tv.build_examples(rows, refs, cfg.verifier, tok, 384)
    per_step = len(examples) // (a.steps + 1)
    collate = tv.collate_fn(pad_id_of(tok), cfg.verifier.pack_tokens)
    loss_fn = tv.make_loss_fn(cfg.verifier)
    opts = {m: build_optimizer(v, cfg.verifier) for m, (v, _) in arms.items()}
    secs = {m: 0.0 for m in arms}
    for step in range(a.steps + 1):
        batch = collate(examples[step * per_step:(step + 1) * per_step])
        for m, (ver, _) in arms.items():
            t0 = time.perf_counter()
            loss, _ = loss_fn(ver, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in ver.parameters() if p.requires_grad], 1.0)
            opts[m].step()
            opts[m].zero_grad(set_to_none=True)
            if step:  # the first step warms up
                secs[m] += time.perf_counter() - t0
    value_per_step = n_value / len(examples) * per_step
    print(f"model {a.model}, head {a.head}, {a.threads} threads, {a.steps} steps of {per_step} examples "
          f"(~{value_per_step:.0f} value examples) per arm")
    print("| mode | value examples/s | vs full | trainable params | AdamW state (MB) |")
    print("|---|---|---|---|---|")
    base = secs.get("full")
    for m, (ver, _) in arms.items():
        n = sum(p.numel() for p in ver.parameters() if p.requires_grad)
        rate = value_per_step * a.steps / secs[m]
        ratio = f"{base / secs[m]:.2f}x" if base else "-"
        print(f"| {m} | {rate:.2f} | {ratio} | {n / 1e6:.1f}M | {2 * 4 * n / 2**20:.0f} |")


if __name__ == "__main__":
    main()
