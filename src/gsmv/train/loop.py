"""The training loop shared by generator fine-tuning and verifier training.

Public API (small on purpose):

    accelerator = make_accelerator(cfg, tcfg)            # cpu / cuda, DDP / FSDP / DeepSpeed from `accelerate launch`
    h = train_hash(cfg, tcfg)                             # what a checkpoint must match to be resumed
    result = fit(accelerator=..., model=..., tcfg=..., train_examples=[{"input_ids": [...], ...}],
                 collate=pad_collate_fn(pad_id), loss_fn=causal_lm_loss, ckpt_dir=run/"generator",
                 config_hash=h, save_model=hf_saver(tokenizer), metrics=MetricsLog(...),
                 val_examples=[...])
    # → ckpt_dir/step-NNNNNN/ (resumable) and ckpt_dir/final/ (model folder + trainer_state.json)

Pieces, usable on their own: build_optimizer, build_scheduler, lr_factor, batch_plan, pad_collate_fn,
lm_loss, causal_lm_loss, evaluate_loss; checkpoint I/O (save_checkpoint, latest_checkpoint, load_checkpoint,
read_state, hf_saver) is gsmv.train.checkpoint.

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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn

from gsmv import progress
from gsmv.artifacts import MetricsLog
from gsmv.config import RunConfig, TrainConfig, config_hash, hash_dict
from gsmv.errors import GsmvError
from gsmv.runtime import pick_device, pick_dtype
from gsmv.train.checkpoint import (
    STATE_FILE,
    SaveModelFn,
    latest_checkpoint,
    load_checkpoint,
    read_state,
    save_checkpoint,
    write_model_folder,
)

# accelerate warns at every save_state that tied embeddings were de-duplicated; that is expected for
# tie_word_embeddings models and resume is tested to be exact, so the warning is only noise.
logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)

Batch = dict[str, torch.Tensor]
LossFn = Callable[[nn.Module, Batch], tuple[torch.Tensor, dict[str, float]]]

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


def train_hash(cfg: RunConfig, tcfg: TrainConfig, **more: Any) -> str:
    """What a checkpoint must have been trained with to be resumed: the trainer's settings (not its cadence
    fields: a run may resume with others), the model, how the data was cut, and `more` (the verifier's start and
    data counts)."""
    data = {k: getattr(cfg.data, k) for k in ("source", "val_size", "val_seed", "train_limit")}
    # The shape of this part is what checkpoints made before hold: the data cut itself, or a dict around it.
    key = {"data": data, **more} if more else data
    return config_hash(hash_dict(tcfg, training=True), cfg.model, key)


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
    final_dir = Path(ckpt_dir) / "final"
    if (final_dir / STATE_FILE).is_file():
        st = read_state(final_dir)
        if st.get("config_hash") == config_hash and st.get("complete"):
            return FitResult(step=st["step"], total_steps=st["total_steps"], final_dir=final_dir,
                             val=st.get("val", {}), skipped=True)
    if not train_examples:
        raise GsmvError(f"{ckpt_dir}: no training examples")
    trainer = _Trainer(accelerator=accelerator, tcfg=tcfg, examples=train_examples, collate=collate,
                       loss_fn=loss_fn, ckpt_dir=Path(ckpt_dir), config_hash=config_hash, save_model=save_model,
                       metrics=metrics, val_examples=val_examples, eval_fn=eval_fn, groups=groups)
    return trainer.run(model, on_step=on_step, desc=desc)


class _Window:
    """Sums over the optimizer steps since the last log line; its clock counts training time only."""

    def __init__(self) -> None:
        self.loss, self.n, self.tokens, self.stats = 0.0, 0, 0, {}
        self.t0 = time.perf_counter()

    def add(self, loss: torch.Tensor, batch: Batch, stats: dict[str, float]) -> None:
        self.loss += float(loss.detach())
        self.n += 1
        self.tokens += int(batch["n_tokens"]) if "n_tokens" in batch else \
            int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
        for key, v in stats.items():
            self.stats[key] = self.stats.get(key, 0.0) + float(v)


class _Trainer:
    """fit's state and phases, in the order a run goes through them: plan the steps, set up (optimizer,
    schedule, resume), then for every optimizer step: accumulate its micro-batches, log the window, evaluate and
    checkpoint; finally write final/."""

    def __init__(self, *, accelerator: Accelerator, tcfg: TrainConfig, examples: Sequence[dict],
                 collate: Callable[[list[dict]], Batch], loss_fn: LossFn, ckpt_dir: Path, config_hash: str,
                 save_model: SaveModelFn, metrics: MetricsLog | None, val_examples: Sequence[dict] | None,
                 eval_fn: Callable[[nn.Module], dict[str, float]] | None, groups: Sequence[int] | None):
        self.acc, self.tcfg, self.examples, self.collate, self.loss_fn = accelerator, tcfg, examples, collate, loss_fn
        self.ckpt_dir, self.config_hash, self.save_model = ckpt_dir, config_hash, save_model
        self.metrics = metrics if accelerator.is_main_process else None
        self.val_examples, self.eval_fn, self.groups = val_examples, eval_fn, groups
        self.world, self.rank = accelerator.num_processes, accelerator.process_index
        self.lengths = [len(ex["input_ids"]) for ex in examples]
        self.steps_per_epoch = len(self.plan(0)) // tcfg.grad_accum
        if self.steps_per_epoch == 0:
            raise GsmvError(
                f"{ckpt_dir}: {len(examples)} examples make no full optimizer step "
                f"(batch_size {tcfg.batch_size} × grad_accum {tcfg.grad_accum} × {self.world} processes)")
        self.total_steps = max(1, math.ceil(tcfg.epochs * self.steps_per_epoch))
        self.step, self.last_val, self.grad_norm = 0, {}, float("nan")

    def plan(self, epoch: int) -> list[list[int]]:
        """The epoch's global batches; every process gets at least one row of each."""
        return [b for b in batch_plan(self.lengths, self.tcfg.batch_size * self.world, self.tcfg.seed, epoch,
                                      groups=self.groups) if len(b) >= self.world]

    def run(self, model: nn.Module, *, on_step: Callable[[int], None] | None, desc: str) -> FitResult:
        resumed_from = self.setup(model)
        k = self.tcfg.grad_accum
        self.model.train()
        bar = progress.bar(total=self.total_steps, initial=self.step, desc=desc, unit="step",
                           disable=not self.acc.is_main_process)
        window = _Window()
        while self.step < self.total_steps:
            epoch, offset = divmod(self.step, self.steps_per_epoch)
            batches = self.plan(epoch)
            for s in range(offset, self.steps_per_epoch):
                if self.step >= self.total_steps:
                    break
                self.optimizer_step(batches[s * k:(s + 1) * k], window)
                self.step += 1
                bar.update(1)
                if self.step % self.tcfg.log_every == 0 or self.step == self.total_steps:
                    self.log_window(window, bar)
                    window = _Window()
                t_pause = time.perf_counter()
                self.evaluate_and_checkpoint(on_step)
                window.t0 += time.perf_counter() - t_pause
        bar.close()
        return self.finish(resumed_from)

    def setup(self, model: nn.Module) -> Path | None:
        """Optimizer and schedule, prepared; the state of the latest checkpoint, if any (its path)."""
        optimizer = build_optimizer(model, self.tcfg)
        self.scheduler = build_scheduler(optimizer, self.tcfg, self.total_steps)
        self.model, self.optimizer = self.acc.prepare(model, optimizer)
        resumed_from = latest_checkpoint(self.ckpt_dir)
        if resumed_from is not None:
            st = load_checkpoint(self.acc, resumed_from, scheduler=self.scheduler, config_hash=self.config_hash,
                                 world=self.world)
            self.step, self.last_val = int(st["step"]), st.get("val", {})
        else:
            # Different dropout masks per process; the model itself is identical (DDP broadcasts rank 0's).
            torch.manual_seed(self.tcfg.seed * 1000 + self.rank)
        if self.metrics is not None:
            self.metrics.log(event="start", step=self.step, total_steps=self.total_steps,
                             steps_per_epoch=self.steps_per_epoch, examples=len(self.examples),
                             processes=self.world, resumed_from=str(resumed_from) if resumed_from else None)
        return resumed_from

    def optimizer_step(self, micro_batches: list[list[int]], window: _Window) -> None:
        acc, model = self.acc, self.model
        for gb in micro_batches:
            rows = [self.examples[i] for i in rank_slice(gb, self.rank, self.world)]
            batch = _to_device(self.collate(rows), acc.device)
            with acc.accumulate(model):
                loss, stats = self.loss_fn(model, batch)
                acc.backward(loss)
                if acc.sync_gradients and self.tcfg.max_grad_norm > 0:
                    gn = acc.clip_grad_norm_(model.parameters(), self.tcfg.max_grad_norm)
                    self.grad_norm = float(gn) if gn is not None else float("nan")  # DeepSpeed clips inside
                self.optimizer.step()
                if acc.sync_gradients and not acc.optimizer_step_was_skipped:
                    self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            window.add(loss, batch, stats)

    def log_window(self, w: _Window, bar: Any) -> None:
        """One metrics line (loss averaged and tokens summed over processes) for the window just ended."""
        t = torch.tensor([w.loss / max(w.n, 1), float(w.tokens)], device=self.acc.device)
        mean_loss = float(self.acc.reduce(t[:1], reduction="mean"))
        tokens = float(self.acc.reduce(t[1:], reduction="sum"))
        dt = time.perf_counter() - w.t0
        rec = {"step": self.step, "epoch": round(self.step / self.steps_per_epoch, 4), "loss": round(mean_loss, 5),
               "lr": self.scheduler.get_last_lr()[0], "grad_norm": round(self.grad_norm, 4),
               "tokens_per_s": round(tokens / max(dt, 1e-9), 1)}
        rec.update({f"train_{k}": v / max(w.n, 1) for k, v in w.stats.items() if k != "tokens"})
        if self.metrics is not None:
            self.metrics.log(**rec)
        bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{rec['lr']:.2e}")

    def evaluate_and_checkpoint(self, on_step: Callable[[int], None] | None) -> None:
        step, tcfg = self.step, self.tcfg
        epoch_end = step % self.steps_per_epoch == 0
        if epoch_end or (tcfg.eval_every and step % tcfg.eval_every == 0) or step == self.total_steps:
            self.last_val = self.run_eval()
        if on_step is not None:
            on_step(step)
        if step < self.total_steps and (epoch_end or (tcfg.save_every and step % tcfg.save_every == 0)):
            save_checkpoint(self.acc, self.ckpt_dir, model=self.model, optimizer=self.optimizer,
                            scheduler=self.scheduler, save_model=self.save_model, state=self.state(),
                            keep=tcfg.keep_checkpoints)

    def run_eval(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.val_examples:
            out.update({f"val_{k}": v for k, v in evaluate_loss(
                self.acc, self.model, self.val_examples, self.collate, self.loss_fn, self.tcfg.batch_size).items()})
        if self.eval_fn is not None:
            out.update(self.eval_fn(self.model))
        if out and self.metrics is not None:
            self.metrics.log(step=self.step, epoch=round(self.step / self.steps_per_epoch, 4), **out)
        return out

    def state(self, complete: bool = False) -> dict:
        return {"step": self.step, "epoch": self.step / self.steps_per_epoch, "total_steps": self.total_steps,
                "steps_per_epoch": self.steps_per_epoch, "config_hash": self.config_hash,
                "num_processes": self.world, "complete": complete, "val": self.last_val or {}}

    def finish(self, resumed_from: Path | None) -> FitResult:
        if not self.last_val and (self.val_examples or self.eval_fn):
            self.last_val = self.run_eval()
        final_dir = self.ckpt_dir / "final"
        write_model_folder(self.acc, final_dir, self.model, self.save_model, self.state(complete=True), resumable=False)
        if self.metrics is not None:
            self.metrics.log(event="end", step=self.step, final=str(final_dir), **self.last_val)
        return FitResult(step=self.step, total_steps=self.total_steps, final_dir=final_dir, val=self.last_val,
                         resumed_from=resumed_from)
