"""Helpers both HF sampling engines use to prefill prompts through a model's own forward."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import torch


def cache_kwarg(model: Any) -> str:
    """transformers 5 renamed `past_key_values` to `cache` (the old name warns until 5.40)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def layer_kv(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return [(k, v) for k, v, *_ in cache]


def chunks(items: list, length: Any, budget: int = 8192) -> Iterator[list]:
    """Split prefill work into forward calls of at most `budget` padded tokens."""
    chunk: list = []
    longest = 0
    for it in items:
        n = length(it)
        if chunk and max(longest, n) * (len(chunk) + 1) > budget:
            yield chunk
            chunk, longest = [], 0
        chunk.append(it)
        longest = max(longest, n)
    if chunk:
        yield chunk
