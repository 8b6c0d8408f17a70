"""Checkpoints of the training loop: model folders written atomically on every process, resumable state
(accelerate's optimizer/RNG state and the scheduler), and finding and checking the latest one.

A checkpoint folder step-NNNNNN/ holds the model folder written by `save_model`, `state/` (accelerate) and
`scheduler.pt` when resumable, and trainer_state.json (step, config hash, process count); final/ holds the
model folder and trainer_state.json only.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from gsmv.artifacts import atomic_write_json, read_json, replace_dir, writing
from gsmv.errors import GsmvError

SaveModelFn = Callable[[nn.Module, Path, dict[str, torch.Tensor]], None]
STATE_FILE = "trainer_state.json"
_STEP_RE = re.compile(r"^step-(\d{6,})$")


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


def write_model_folder(
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

    The temporary name is fixed (not random) so all processes write into the same folder. A full disk or a
    refused write is an OSError naming `dest` (save_pretrained's own is a SafetensorError naming no file).
    """
    tmp = dest.with_name(f".{dest.name}.tmp")
    with writing(dest):
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
    write_model_folder(accelerator, dest, model, save_model, state, resumable=True, optimizer=optimizer, scheduler=scheduler)
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
