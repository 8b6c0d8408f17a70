"""Stage `finetune`: supervised fine-tuning of the generator on GSM8K train solutions.

Input: format_prompt(question); target: solution + EOS; loss on solution tokens only unless
cfg.finetune.loss_on_prompt. A from-scratch preset first gets a BPE tokenizer trained on the
train split (run_dir/tokenizer, reused when present). Writes resumable checkpoints to
run_dir/generator/step-NNNNNN and the model folder (model + tokenizer) run_dir/generator/final.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from accelerate import Accelerator
from transformers import AutoTokenizer

from gsmv.artifacts import MetricsLog, RunPaths, atomic_dir, atomic_write_json, read_json
from gsmv.config import RunConfig
from gsmv.data.gsm8k import Problem, format_prompt
from gsmv.data.tasks import load_split
from gsmv.errors import GsmvError
from gsmv.models.loading import (
    apply_residual_dropout,
    build_from_preset,
    is_preset,
    load_model_and_tokenizer,
    train_top_layers,
)
from gsmv.models.tokenizer import check_tokenizer, encode_prompt, encode_solution, train_tokenizer
from gsmv.runtime import seed_everything, setup_threads
from gsmv.train.checkpoint import hf_saver
from gsmv.train.loop import causal_lm_loss, fit, make_accelerator, pad_collate_fn, train_hash
from gsmv.train.lora import add_lora, merged_saver

TOKENIZER_META = "gsmv_tokenizer.json"


def encode_problems(
    tok: Any, problems: Sequence[Problem], max_len: int, loss_on_prompt: bool
) -> tuple[list[dict], int]:
    """Examples {"input_ids", "labels"} (labels -100 where no loss); returns (examples, n_truncated).

    Rows longer than max_len are cut at max_len; a row whose prompt alone fills max_len is dropped.
    """
    out, truncated = [], 0
    for p in problems:
        prompt = encode_prompt(tok, format_prompt(p.question))
        target = encode_solution(tok, p.solution)
        ids = prompt + target
        labels = list(ids) if loss_on_prompt else [-100] * len(prompt) + target
        if len(ids) > max_len:
            truncated += 1
            ids, labels = ids[:max_len], labels[:max_len]
        if len(prompt) >= max_len:
            continue
        out.append({"input_ids": ids, "labels": labels})
    return out, truncated


def _tokenizer_for_preset(cfg: RunConfig, accelerator: Accelerator, train: Sequence[Problem]) -> Any:
    paths = RunPaths(cfg.run_dir)
    meta = {"vocab_size": cfg.model.vocab_size, "train_problems": len(train)}
    if accelerator.is_main_process and not (paths.tokenizer / TOKENIZER_META).is_file():
        texts = (t for p in train for t in (format_prompt(p.question), p.solution))
        tok = train_tokenizer(texts, cfg.model.vocab_size)
        with atomic_dir(paths.tokenizer) as tmp:
            tok.save_pretrained(tmp)
            atomic_write_json(tmp / TOKENIZER_META, meta)
    accelerator.wait_for_everyone()
    have = read_json(paths.tokenizer / TOKENIZER_META)
    if have != meta:
        raise GsmvError(
            f"{paths.tokenizer}: tokenizer was trained with {have}, the config asks for {meta}; "
            "delete the folder to retrain it"
        )
    return check_tokenizer(AutoTokenizer.from_pretrained(paths.tokenizer), where=str(paths.tokenizer))


def main(cfg: RunConfig, *, on_step: Callable[[int], None] | None = None) -> None:
    """Fine-tune cfg.model.name on the train split → run_dir/generator/final. Resumes from checkpoints."""
    ft = cfg.finetune
    setup_threads(cfg)
    accelerator = make_accelerator(cfg, ft)
    paths = RunPaths(cfg.run_dir)
    train = load_split(cfg, "train")
    val = load_split(cfg, "val")
    if not train:
        raise GsmvError(f"{cfg.run_dir}: the train split is empty (check data.dir and data.train_limit)")

    seed_everything(ft.seed)
    if is_preset(cfg.model.name):
        tok = _tokenizer_for_preset(cfg, accelerator, train)
        model = build_from_preset(cfg.model, tok)
    else:
        # fp32 master weights; make_accelerator turns bf16/fp16 into autocast on GPUs.
        model, tok = load_model_and_tokenizer(cfg.model.name, dtype="float32", device="cpu")
    apply_residual_dropout(model, ft.dropout)
    trains = "all weights"
    if ft.lora_rank:
        model = add_lora(model, ft.lora_rank, ft.lora_alpha)
        targets = ", ".join(sorted(model.peft_config["default"].target_modules))
        trains = f"LoRA rank {ft.lora_rank}, alpha {ft.lora_alpha:g} on {targets} (merged into the weights)"
    elif ft.train_layers:
        train_top_layers(model, ft.train_layers, "finetune.train_layers")
        trains = f"the top {ft.train_layers} decoder layers and the final norm"

    if ft.extra_problems:
        # After the tokenizer: a preset's vocabulary stays the train split's, so runs with and without extra
        # problems share it (and a verifier can start from either generator).
        from gsmv.data.tasks import fresh_problems

        train = train + fresh_problems(cfg, ft.extra_problems, stream="generator")
    train_ex, n_trunc = encode_problems(tok, train, ft.max_len, ft.loss_on_prompt)
    val_ex, _ = encode_problems(tok, val, ft.max_len, ft.loss_on_prompt)
    saver = hf_saver(tok, card={"kind": "generator", "base": cfg.model.name,
                                "extra": {"dataset": "openai/gsm8k" if cfg.data.source == "gsm8k" else None,
                                          "data": cfg.data.source, "epochs": ft.epochs, "trained": trains}})
    if ft.lora_rank:
        saver = merged_saver(saver)
    metrics = MetricsLog(paths.metrics, "finetune", enabled=accelerator.is_main_process)
    if n_trunc:
        metrics.log(event="truncated", examples=n_trunc, max_len=ft.max_len)
    fit(
        accelerator=accelerator,
        model=model,
        tcfg=ft,
        train_examples=train_ex,
        collate=pad_collate_fn(tok.pad_token_id),
        loss_fn=causal_lm_loss,
        ckpt_dir=paths.generator,
        config_hash=train_hash(cfg, ft),
        save_model=saver,
        metrics=metrics,
        val_examples=val_ex,
        on_step=on_step,
        desc="finetune",
    )
    accelerator.wait_for_everyone()
