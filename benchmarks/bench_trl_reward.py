"""gsmv's verifier training against TRL's RewardTrainer on the same pretrained model, sequences and lengths.

    pip install trl==1.16.0        # for this benchmark only, never a gsmv dependency
    python benchmarks/bench_trl_reward.py --model smollm2-135m --steps 4 --rounds 2

The sequences: synth problems, each with S samples (its reference solution, so lengths are real; labels
alternate right/wrong; speed does not depend on them) in the model's own tokens. TRL gets them as S/2
chosen/rejected pairs per problem (pre-tokenized `chosen_ids`/`rejected_ids`, the same ids) and trains
AutoModelForSequenceClassification with its Bradley-Terry loss (with its default gradient checkpointing, and
without); gsmv trains its verifier on the same sequences
as value examples (shared-prompt packing, the joint LM loss at verifier.lm_ratio as the synth-smol preset has it),
in full and with only the top 4 layers trained. Both use AdamW and fp32 on the CPU. Arms run in rounds
(TRL, then each gsmv arm, repeated) so that a change of machine load hits all of them; the first step of each
run is a warm-up. The unit is scored sequences per second of training.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from gsmv.config import load_config
from gsmv.data.tasks import load_split
from gsmv.models.sources import resolve_model
from gsmv.models.tokenizer import encode_solution
from gsmv.models.verifier import build_verifier, pad_id_of, prompt_ids
from gsmv.train import verifier as tv
from gsmv.train.loop import build_optimizer


def sequences(tok, problems, per_problem: int) -> list[dict]:
    return [{"problem_id": p.id, "prompt": prompt_ids(tok, p.question), "tokens": encode_solution(tok, p.solution),
             "label": j % 2 == 0, "wrong_char": None} for p in problems for j in range(per_problem)]


def trl_seconds(folder: str, rows: list[dict], pairs_per_step: int, steps: int, checkpointing: bool) -> float:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl import RewardConfig, RewardTrainer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    chosen = [r["prompt"] + r["tokens"] for r in rows if r["label"]]
    rejected = [r["prompt"] + r["tokens"] for r in rows if not r["label"]]
    data = Dataset.from_dict({"chosen_ids": chosen, "rejected_ids": rejected})
    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            marks.append(time.perf_counter())

        def on_step_begin(self, args, state, control, **kw):
            if not marks:
                marks.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        args = RewardConfig(output_dir=out, per_device_train_batch_size=pairs_per_step, max_steps=steps + 1,
                            learning_rate=1e-4, use_cpu=True, report_to="none", save_strategy="no",
                            logging_steps=1000, max_length=384, dataloader_num_workers=0, disable_tqdm=True,
                            gradient_checkpointing=checkpointing)
        RewardTrainer(model=model, args=args, train_dataset=data, processing_class=tok,
                      callbacks=[Clock()]).train()
    return marks[-1] - marks[1]  # steps after the warm-up


def gsmv_seconds(name: str, rows: list[dict], refs: list, train_layers: int, per_step: int, steps: int) -> float:
    cfg = load_config("synth-smol", [f"verifier.train_layers={train_layers}", "verifier.group_samples=4"])
    ver, tok = build_verifier(name, head=cfg.verifier.head, dropout=0.0)
    tv.freeze_lower_layers(ver, train_layers)
    ver.train()
    examples, n_value, _, _ = tv.build_examples(rows, refs, cfg.verifier, tok, 384)
    value, lm = examples[:n_value], examples[n_value:]  # value examples first, then the LM half
    collate = tv.collate_fn(pad_id_of(tok), cfg.verifier.pack_tokens)
    loss_fn = tv.make_loss_fn(cfg.verifier)
    opt = build_optimizer(ver, cfg.verifier)
    n_lm = round(cfg.verifier.lm_ratio * per_step)
    t0 = 0.0
    for step in range(steps + 1):
        if step == 1:
            t0 = time.perf_counter()
        batch = collate(value[step * per_step:(step + 1) * per_step] + lm[step * n_lm:(step + 1) * n_lm])
        loss, _ = loss_fn(ver, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in ver.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--problems", type=int, default=4, help="problems per step")
    ap.add_argument("--per-problem", type=int, default=4, help="samples per problem (even)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    folder = resolve_model(a.model)
    _, tok = build_verifier(folder, head="linear")
    problems = load_split(load_config("synth"), "train")[: a.problems * (a.steps + 1)]
    rows = sequences(tok, problems, a.per_problem)
    refs = [(p.id, prompt_ids(tok, p.question), encode_solution(tok, p.solution)) for p in problems]
    per_step = a.problems * a.per_problem
    secs = {"TRL RewardTrainer, full (its default: gradient checkpointing)": 0.0,
            "TRL RewardTrainer, full, no checkpointing": 0.0, "gsmv, full": 0.0, "gsmv, top 4 layers": 0.0}
    for _ in range(a.rounds):
        secs["TRL RewardTrainer, full (its default: gradient checkpointing)"] += trl_seconds(
            folder, rows, per_step // 2, a.steps, True)
        secs["TRL RewardTrainer, full, no checkpointing"] += trl_seconds(folder, rows, per_step // 2, a.steps, False)
        secs["gsmv, full"] += gsmv_seconds(folder, rows, refs, 0, per_step, a.steps)
        secs["gsmv, top 4 layers"] += gsmv_seconds(folder, rows, refs, 4, per_step, a.steps)
    n = per_step * a.steps * a.rounds
    mean_len = sum(len(r["prompt"]) + len(r["tokens"]) for r in rows) / len(rows)
    print(f"{a.model}: {per_step} sequences a step (mean {mean_len:.0f} tokens), {a.steps} timed steps x "
          f"{a.rounds} rounds per arm, {a.threads} threads")
    print("| arm | sequences/s | vs TRL without checkpointing |")
    print("|---|---|---|")
    base = secs["TRL RewardTrainer, full, no checkpointing"]
    for arm, s in secs.items():
        print(f"| {arm} | {n / s:.2f} | {base / s:.2f}x |")


if __name__ == "__main__":
    main()
