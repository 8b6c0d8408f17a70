"""The training loop shared by generator fine-tuning and verifier training.

Public API (small on purpose):

    accelerator = make_accelerator(cfg, tcfg)            # cpu / cuda, DDP / FSDP / DeepSpeed from `accelerate launch`
    h = train_hash(tcfg, cfg.model, cfg.data, ...)       # what a checkpoint must match to be resumed
    result = fit(accelerator=..., model=..., tcfg=..., train_examples=[{"input_ids": [...], ...}],
                 collate=pad_collate_fn(pad_id), loss_fn=causal_lm_loss, ckpt_dir=run/"generator",
                 config_hash=h, save_model=hf_saver(tokenizer), metrics=MetricsLog(...),
                 val_examples=[...])
    # → ckpt_dir/step-NNNNNN/ (resumable) and ckpt_dir/final/ (model folder + trainer_state.json)

Pieces, usable on their own: build_optimizer, build_scheduler, lr_factor, batch_plan, pad_collate_fn,
lm_loss, causal_lm_loss, evaluate_loss, save_checkpoint, latest_checkpoint, load_checkpoint, read_state.

Conventions
- An example is a dict with at least "input_ids" (list[int]; its length drives length bucketing);
  `collate(list[example]) -> dict[str, Tensor]` builds a batch; `loss_fn(model, batch) -> (loss, stats)`
  returns a scalar mean loss and float stats; stats["tokens"] (if present) weights the mean in evaluation.
- One optimizer step = tcfg.grad_accum micro-batches of tcfg.batch_size sequences per process.
  The data order of every epoch is a deterministic function of (tcfg.seed, epoch), so a resumed run
  skips the batches already done and ends with the same weights as an uninterrupted one.
- A checkpoint folder step-NNNNNN/ holds the model folder written by `save_model` (loadable with
  gsmv.models.loading.load_model_and_tokenizer for causal LMs), state/ (accelerate.save_state: model,
  optimizer, RNG of every process), scheduler.pt and trainer_state.json (step, epoch, config hash).
  It appears only once complete (written under a temporary name, then renamed); the last
  tcfg.keep_checkpoints are kept. Resuming from a checkpoint with another config hash raises GsmvError.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn
from tqdm.auto import tqdm

from gsmv.artifacts import MetricsLog, atomic_write_json, read_json, replace_dir
from gsmv.config import RunConfig, TrainConfig, config_hash, hash_dict
from gsmv.errors import GsmvError
from gsmv.runtime import pick_device, pick_dtype

# accelerate warns at every save_state that tied embeddings were de-duplicated; that is expected for
# tie_word_embeddings models and resume is tested to be exact, so the warning is only noise.
logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)

Batch = dict[str, torch.Tensor]
LossFn = Callable[[nn.Module, Batch], tuple[torch.Tensor, dict[str, float]]]
SaveModelFn = Callable[[nn.Module, Path, dict[str, torch.Tensor]], None]

STATE_FILE = "trainer_state.json"
_STEP_RE = re.compile(r"^step-(\d{6,})$")
# Fields of TrainConfig that change logging or disk use but not the weights: a run may resume
# with other values.
_UNHASHED = ("log_every", "eval_every", "save_every", "keep_checkpoints")
BUCKET_BATCHES = 32  # length bucketing groups this many batches' worth of examples


# ---------------------------------------------------------------- setup


def make_accelerator(cfg: RunConfig, tcfg: TrainConfig) -> Accelerator:
    """An Accelerator for cfg.device; bf16/fp16 model dtypes on CUDA become mixed precision.

    Train with fp32 weights: accelerate autocasts the forward pass, which keeps AdamW's updates exact.
    """
    device = pick_device(cfg)
    mixed = "no"
    if device.type == "cuda":
        dtype = pick_dtype(cfg, device)
        mixed = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "no")
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision=mixed, gradient_accumulation_steps=tcfg.grad_accum)
    ds = accelerator.state.deepspeed_plugin
    if ds is not None:
        # We feed batches ourselves (no prepared DataLoader), so DeepSpeed learns the sizes here.
        ds.deepspeed_config["train_micro_batch_size_per_gpu"] = tcfg.batch_size
        ds.deepspeed_config["gradient_accumulation_steps"] = tcfg.grad_accum
        ds.deepspeed_config["gradient_clipping"] = tcfg.max_grad_norm
    return accelerator


def train_hash(tcfg: TrainConfig, *parts: Any) -> str:
    """Hash of the training config plus other sections (model, data ...) that shape the weights."""
    d = {k: v for k, v in hash_dict(tcfg).items() if k not in _UNHASHED}
    return config_hash(d, *parts)


def _no_decay(name: str, param: nn.Parameter) -> bool:
    lname = name.lower()
    return param.ndim < 2 or "norm" in lname or "embed" in lname or "wte" in lname or "wpe" in lname or lname.endswith(".bias")


def build_optimizer(model: nn.Module, tcfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only (not norms, biases or embeddings)."""
    decay, no_decay, seen = [], [], set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (no_decay if _no_decay(name, p) else decay).append(p)
    groups = [{"params": decay, "weight_decay": tcfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=tcfg.lr, betas=tuple(tcfg.betas))


def lr_factor(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the peak lr at `step` (0-based): linear warmup, then cosine/linear decay to min_ratio."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    if schedule == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif schedule == "linear":
        shape = 1.0 - progress
    else:
        raise GsmvError(f"unknown lr schedule '{schedule}': valid are cosine, linear, constant")
    return min_ratio + (1.0 - min_ratio) * shape


def build_scheduler(optimizer: torch.optim.Optimizer, tcfg: TrainConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = int(round(tcfg.warmup_ratio * total_steps))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup, tcfg.schedule, tcfg.min_lr_ratio)
    )


# ---------------------------------------------------------------- data


def batch_plan(lengths: Sequence[int], batch_size: int, seed: int, epoch: int, *, bucket: bool = True,
               groups: Sequence[int] | None = None) -> list[list[int]]:
    """Batches of example indices for one epoch, a pure function of (seed, epoch).

    Shuffles, then (bucket=True) sorts each window of BUCKET_BATCHES batches by length so padding is
    small, then shuffles the batch order so lengths don't trend through the epoch. With `groups` (a group id
    per example, e.g. its problem; -1 = a group of its own) the groups are shuffled instead and each group's
    examples are laid out together, so a batch holds whole groups (a group larger than what is left of a
    batch spills into the next); no length bucketing then.
    """
    rng = np.random.default_rng([seed, epoch])
    if groups is not None:
        members: dict[int, list[int]] = {}
        for i, g in enumerate(groups):
            members.setdefault(int(g) if g >= 0 else -1 - i, []).append(i)
        units = list(members.values())
        order = np.asarray([i for u in rng.permutation(len(units)) for i in units[u]], dtype=np.int64)
        bucket = False
    else:
        order = rng.permutation(len(lengths))
    if bucket:
        window = batch_size * BUCKET_BATCHES
        chunks = [order[i:i + window] for i in range(0, len(order), window)]
        order = np.concatenate(
            [c[np.argsort([-lengths[j] for j in c], kind="stable")] for c in chunks]
        ) if chunks else order
    batches = [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm]


def rank_slice(global_batch: list[int], rank: int, world: int) -> list[int]:
    return [int(i) for i in np.array_split(np.asarray(global_batch, dtype=np.int64), world)[rank]]


def pad_collate_fn(pad_id: int, keys: Sequence[str] = ("input_ids", "labels")) -> Callable[[list[dict]], Batch]:
    """Right-pad `keys` to the batch's longest row: input_ids with pad_id, labels with -100,
    other keys with 0; adds attention_mask."""

    def collate(examples: list[dict]) -> Batch:
        width = max(len(ex["input_ids"]) for ex in examples)
        out: Batch = {}
        for key in keys:
            fill = pad_id if key == "input_ids" else (-100 if key == "labels" else 0)
            rows = [list(ex[key]) + [fill] * (width - len(ex[key])) for ex in examples]
            out[key] = torch.tensor(rows, dtype=torch.long)
        out["attention_mask"] = torch.tensor(
            [[1] * len(ex["input_ids"]) + [0] * (width - len(ex["input_ids"])) for ex in examples], dtype=torch.long
        )
        return out

    return collate


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Next-token cross entropy (fp32) averaged over labels != -100; returns (loss, n_target_tokens)."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    n = int((shift_labels != -100).sum())
    loss = nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1), ignore_index=-100, reduction="sum"
    )
    return loss / max(n, 1), n


def causal_lm_loss(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
    """The generator's loss: next-token CE on the labelled tokens."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    loss, n = lm_loss(out.logits, batch["labels"])
    return loss, {"tokens": float(n)}


def _to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def evaluate_loss(
    accelerator: Accelerator,
    model: nn.Module,
    examples: Sequence[dict],
    collate: Callable[[list[dict]], Batch],
    loss_fn: LossFn,
    batch_size: int,
) -> dict[str, float]:
    """Mean loss (and stats) over `examples`, split across processes, weighted by stats["tokens"].

    Every process runs the same number of forward passes (sharded models need that); a process
    with no rows left reruns the first example with weight 0.
    """
    if not examples:
        return {}
    was_training = model.training
    model.eval()
    world, rank = accelerator.num_processes, accelerator.process_index
    lengths = [len(ex["input_ids"]) for ex in examples]
    # Sorted by length: little padding, and the same plan on every process.
    order = sorted(range(len(examples)), key=lambda i: -lengths[i])
    sums: dict[str, float] = {}
    for start in range(0, len(order), batch_size * world):
        mine = rank_slice(order[start:start + batch_size * world], rank, world)
        weight_on = bool(mine)
        batch = _to_device(collate([examples[i] for i in (mine or order[:1])]), accelerator.device)
        loss, stats = loss_fn(model, batch)
        w = float(stats.get("tokens", len(mine))) if weight_on else 0.0
        sums["loss"] = sums.get("loss", 0.0) + float(loss) * w
        for k, v in stats.items():
            if k != "tokens":
                sums[k] = sums.get(k, 0.0) + float(v) * w
        sums["_w"] = sums.get("_w", 0.0) + w
    keys = sorted(sums)
    t = torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=accelerator.device)
    t = accelerator.reduce(t, reduction="sum")
    total = dict(zip(keys, t.tolist(), strict=True))
    wsum = max(total.pop("_w"), 1e-12)
    if was_training:
        model.train()
    return {k: v / wsum for k, v in total.items()}


# ---------------------------------------------------------------- checkpoints


def hf_saver(tokenizer: Any, card: dict | None = None) -> SaveModelFn:
    """save_model for Hugging Face models: save_pretrained (safetensors) of the model and the tokenizer, and
    with `card` (gsmv.model_card.write_card's keyword arguments) a README.md model card."""

    def save(model: nn.Module, folder: Path, state_dict: dict[str, torch.Tensor]) -> None:
        model.save_pretrained(folder, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        if card is not None:
            from gsmv.model_card import write_card

            write_card(folder, **card)

    return save


def _step_dirs(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    out = []
    for p in folder.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The complete step-NNNNNN/ checkpoint with the highest step under `folder`, or None."""
    dirs = _step_dirs(Path(folder))
    return dirs[-1][1] if dirs else None


def read_state(folder: str | Path) -> dict:
    """trainer_state.json of a checkpoint or final folder."""
    return read_json(Path(folder) / STATE_FILE)


def _write_folder(
    accelerator: Accelerator,
    dest: Path,
    model: nn.Module,
    save_model: SaveModelFn,
    state: dict,
    *,
    resumable: bool,
    optimizer: Any = None,
    scheduler: Any = None,
) -> None:
    """Write a model folder (+ resumable state) under a temporary name on every process, then rename.

    The temporary name is fixed (not random) so all processes write into the same folder.
    """
    tmp = dest.with_name(f".{dest.name}.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model)  # collective under FSDP / ZeRO-3
    if accelerator.is_main_process:
        save_model(accelerator.unwrap_model(model), tmp, state_dict)
    if resumable:
        accelerator.save_state(str(tmp / "state"))
        if accelerator.is_main_process:
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    if accelerator.is_main_process:
        atomic_write_json(tmp / STATE_FILE, state)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        replace_dir(tmp, dest)
    accelerator.wait_for_everyone()


def save_checkpoint(
    accelerator: Accelerator,
    ckpt_dir: Path,
    *,
    model: nn.Module,
    optimizer: Any,
    scheduler: Any,
    save_model: SaveModelFn,
    state: dict,
    keep: int,
) -> Path:
    """Write ckpt_dir/step-NNNNNN (state["step"]) atomically; keep the newest `keep` (>= 1)."""
    dest = Path(ckpt_dir) / f"step-{int(state['step']):06d}"
    _write_folder(accelerator, dest, model, save_model, state, resumable=True, optimizer=optimizer, scheduler=scheduler)
    if accelerator.is_main_process:
        for _, old in _step_dirs(Path(ckpt_dir))[: -max(1, keep)]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return dest


def load_checkpoint(accelerator: Accelerator, path: Path, *, scheduler: Any, config_hash: str, world: int) -> dict:
    """Restore model/optimizer/RNG (accelerate state) and scheduler from `path`; return its trainer state.

    The model and optimizer must already be `accelerator.prepare`d.
    """
    state = read_state(path)
    if state.get("config_hash") != config_hash:
        raise GsmvError(
            f"{path}: checkpoint was made with another config (hash {state.get('config_hash')}, now {config_hash}); "
            f"restore that config or delete {path.parent} to start over"
        )
    if int(state.get("num_processes", 1)) != world:
        raise GsmvError(
            f"{path}: checkpoint was made with {state.get('num_processes')} processes, now {world}; "
            f"resume with the same launch or delete {path.parent} to start over"
        )
    accelerator.load_state(str(path / "state"))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    return state


# ---------------------------------------------------------------- the loop


@dataclass
class FitResult:
    step: int
    total_steps: int
    final_dir: Path
    val: dict[str, float] = field(default_factory=dict)
    skipped: bool = False  # final/ already existed for this config hash
    resumed_from: Path | None = None


def fit(
    *,
    accelerator: Accelerator,
    model: nn.Module,
    tcfg: TrainConfig,
    train_examples: Sequence[dict],
    collate: Callable[[list[dict]], Batch],
    loss_fn: LossFn,
    ckpt_dir: str | Path,
    config_hash: str,
    save_model: SaveModelFn,
    metrics: MetricsLog | None = None,
    val_examples: Sequence[dict] | None = None,
    eval_fn: Callable[[nn.Module], dict[str, float]] | None = None,
    on_step: Callable[[int], None] | None = None,
    desc: str = "train",
    groups: Sequence[int] | None = None,
) -> FitResult:
    """Train `model` (unprepared, on CPU or its device) for tcfg.epochs; resume from ckpt_dir if possible.

    Writes ckpt_dir/step-NNNNNN/ every tcfg.save_every steps and at epoch ends, evaluates on
    val_examples (loss_fn in eval mode; plus eval_fn(model) if given, called on every process)
    every tcfg.eval_every steps and at epoch ends, and ends with ckpt_dir/final/. on_step(step)
    is called after every optimizer step (tests use it to simulate a crash). groups: batch_plan's (batches of
    whole groups, for losses between examples of one group).
    """
    ckpt_dir = Path(ckpt_dir)
    final_dir = ckpt_dir / "final"
    if (final_dir / STATE_FILE).is_file():
        st = read_state(final_dir)
        if st.get("config_hash") == config_hash and st.get("complete"):
            return FitResult(step=st["step"], total_steps=st["total_steps"], final_dir=final_dir,
                             val=st.get("val", {}), skipped=True)
    if not train_examples:
        raise GsmvError(f"{ckpt_dir}: no training examples")
    world, rank = accelerator.num_processes, accelerator.process_index
    main = accelerator.is_main_process
    k = tcfg.grad_accum
    lengths = [len(ex["input_ids"]) for ex in train_examples]
    global_bs = tcfg.batch_size * world

    def plan(epoch: int) -> list[list[int]]:
        # Every process gets at least one row of every global batch.
        return [b for b in batch_plan(lengths, global_bs, tcfg.seed, epoch, groups=groups) if len(b) >= world]

    steps_per_epoch = len(plan(0)) // k
    if steps_per_epoch == 0:
        raise GsmvError(
            f"{ckpt_dir}: {len(train_examples)} examples make no full optimizer step "
            f"(batch_size {tcfg.batch_size} × grad_accum {k} × {world} processes)"
        )
    total_steps = max(1, math.ceil(tcfg.epochs * steps_per_epoch))

    optimizer = build_optimizer(model, tcfg)
    scheduler = build_scheduler(optimizer, tcfg, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)

    step = 0
    resumed_from = latest_checkpoint(ckpt_dir)
    if resumed_from is not None:
        st = load_checkpoint(accelerator, resumed_from, scheduler=scheduler, config_hash=config_hash, world=world)
        step = int(st["step"])
        last_val: dict[str, float] = st.get("val", {})
    else:
        last_val = {}
        # Different dropout masks per process; the model itself is identical (DDP broadcasts rank 0's).
        torch.manual_seed(tcfg.seed * 1000 + rank)
    if metrics is not None and main:
        metrics.log(event="start", step=step, total_steps=total_steps, steps_per_epoch=steps_per_epoch,
                    examples=len(train_examples), processes=world,
                    resumed_from=str(resumed_from) if resumed_from else None)

    def state_dict(val: dict | None = None, complete: bool = False) -> dict:
        return {"step": step, "epoch": step / steps_per_epoch, "total_steps": total_steps,
                "steps_per_epoch": steps_per_epoch, "config_hash": config_hash, "num_processes": world,
                "complete": complete, "val": val or {}}

    def run_eval() -> dict[str, float]:
        out: dict[str, float] = {}
        if val_examples:
            out.update({f"val_{k_}": v for k_, v in evaluate_loss(
                accelerator, model, val_examples, collate, loss_fn, tcfg.batch_size).items()})
        if eval_fn is not None:
            out.update(eval_fn(model))
        if out and metrics is not None and main:
            metrics.log(step=step, epoch=round(step / steps_per_epoch, 4), **out)
        return out

    model.train()
    window_loss, window_n, window_tokens, window_stats = 0.0, 0, 0, {}
    grad_norm = float("nan")
    t0 = time.perf_counter()
    bar = tqdm(total=total_steps, initial=step, desc=desc, disable=not main, dynamic_ncols=True)
    while step < total_steps:
        epoch, offset = divmod(step, steps_per_epoch)
        batches = plan(epoch)
        for s in range(offset, steps_per_epoch):
            if step >= total_steps:
                break
            for gb in batches[s * k:(s + 1) * k]:
                batch = _to_device(collate([train_examples[i] for i in rank_slice(gb, rank, world)]), accelerator.device)
                with accelerator.accumulate(model):
                    loss, stats = loss_fn(model, batch)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and tcfg.max_grad_norm > 0:
                        gn = accelerator.clip_grad_norm_(model.parameters(), tcfg.max_grad_norm)
                        grad_norm = float(gn) if gn is not None else float("nan")  # DeepSpeed clips inside
                    optimizer.step()
                    if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
                        scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                window_loss += float(loss.detach())
                window_n += 1
                window_tokens += int(batch["n_tokens"]) if "n_tokens" in batch else \
                    int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
                for key, v in stats.items():
                    window_stats[key] = window_stats.get(key, 0.0) + float(v)
            step += 1
            bar.update(1)
            if step % tcfg.log_every == 0 or step == total_steps:
                t = torch.tensor([window_loss / max(window_n, 1), float(window_tokens)], device=accelerator.device)
                mean_loss = float(accelerator.reduce(t[:1], reduction="mean"))
                tokens = float(accelerator.reduce(t[1:], reduction="sum"))
                dt = time.perf_counter() - t0
                rec = {"step": step, "epoch": round(step / steps_per_epoch, 4), "loss": round(mean_loss, 5),
                       "lr": scheduler.get_last_lr()[0], "grad_norm": round(grad_norm, 4),
                       "tokens_per_s": round(tokens / max(dt, 1e-9), 1)}
                rec.update({f"train_{k_}": v / max(window_n, 1) for k_, v in window_stats.items() if k_ != "tokens"})
                if metrics is not None and main:
                    metrics.log(**rec)
                bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{rec['lr']:.2e}")
                window_loss, window_n, window_tokens, window_stats = 0.0, 0, 0, {}
                t0 = time.perf_counter()
            epoch_end = step % steps_per_epoch == 0
            t_pause = time.perf_counter()
            if epoch_end or (tcfg.eval_every and step % tcfg.eval_every == 0) or step == total_steps:
                last_val = run_eval()
            if on_step is not None:
                on_step(step)
            if step < total_steps and (epoch_end or (tcfg.save_every and step % tcfg.save_every == 0)):
                save_checkpoint(accelerator, ckpt_dir, model=model, optimizer=optimizer, scheduler=scheduler,
                                save_model=save_model, state=state_dict(last_val), keep=tcfg.keep_checkpoints)
            t0 += time.perf_counter() - t_pause  # tokens/s counts training time only
    bar.close()
    if not last_val and (val_examples or eval_fn):
        last_val = run_eval()
    _write_folder(accelerator, final_dir, model, save_model, state_dict(last_val, complete=True), resumable=False)
    if metrics is not None and main:
        metrics.log(event="end", step=step, final=str(final_dir), **last_val)
    return FitResult(step=step, total_steps=total_steps, final_dir=final_dir, val=last_val, resumed_from=resumed_from)
