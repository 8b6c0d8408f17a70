"""Process-level setup shared by the stages: threads, device, dtype, seeding, ranks."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from gsmv.config import RunConfig


def setup_threads(cfg: RunConfig) -> None:
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)


def pick_device(cfg: RunConfig) -> torch.device:
    if cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    return torch.device("cuda", local_rank)


def pick_dtype(cfg: RunConfig, device: torch.device) -> torch.dtype:
    if cfg.model.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, cfg.model.dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def partial_state(cfg: RunConfig):
    """accelerate's process state for this run. On a machine without CUDA, PartialState only makes
    torchrun / `accelerate launch` ranks a gloo group when created with cpu=True (a bare PartialState()
    there is one process per rank, world size 1), so create it first through this function."""
    from accelerate import PartialState

    return PartialState(cpu=pick_device(cfg).type == "cpu")
