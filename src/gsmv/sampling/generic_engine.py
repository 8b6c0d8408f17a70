"""`GenericEngine`: the sampler's engine for every causal LM the Llama fast path cannot run (GPT-2, ...), through
the model's own forward and a DynamicCache. The engine protocol it implements: gsmv.sampling.base.Engine."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import DynamicCache

from gsmv.sampling.cache_utils import cache_kwarg, chunks, layer_kv

Prompt = tuple[int, ...]


class GenericEngine:
    """Any causal LM through its own forward and a DynamicCache, right-aligned (left padding).

    Every row's newest token sits in the last column; a row joins by writing its
    prompt's cache into the columns just before it, zeros and mask 0 further left.
    Columns no row uses any more are dropped from the left now and then.
    """

    def __init__(self, model: Any, n_slots: int, prompt_cache_size: int = 1024):

        self.model = model
        self.n_slots = n_slots
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.kw = cache_kwarg(model)
        self.prompts: dict[Prompt, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.prompt_cache_size = prompt_cache_size
        # One token through the model tells the cache's per-layer shapes.
        probe_cache = DynamicCache()
        self.model(input_ids=torch.zeros(1, 1, dtype=torch.long, device=self.device), use_cache=True,
                   **{self.kw: probe_cache})
        probe = layer_kv(probe_cache)
        self.cache = DynamicCache(ddp_cache_data=[(k[:0, :, :0], v[:0, :, :0]) for k, v in probe])
        self.kv: list[list[torch.Tensor]] = [[k, v] for k, v in layer_kv(self.cache)]
        self.mask = torch.zeros(0, 0, dtype=torch.long, device=self.device)
        self.pos = np.zeros(n_slots, dtype=np.int64)
        self.n = 0

    def has(self, prompt: Prompt) -> bool:
        return prompt in self.prompts

    def prepare(self, prompts: list[Prompt]) -> int:

        todo = [k for k in dict.fromkeys(prompts) if k not in self.prompts]
        while self.prompts and len(self.prompts) + len(todo) > self.prompt_cache_size:
            # Requests arrive problem by problem, so the oldest prompt is the one done with.
            self.prompts.pop(next(iter(self.prompts)))
        for k in todo:
            if len(k) == 1:
                self.prompts[k] = [(kv[0][:0, :, :0], kv[1][:0, :, :0]) for kv in self.kv]
        body = sorted((k for k in todo if len(k) > 1), key=len)
        for chunk in chunks(body, len):
            L = max(len(k) - 1 for k in chunk)
            ids = torch.zeros(len(chunk), L, dtype=torch.long, device=self.device)
            am = torch.zeros(len(chunk), L, dtype=torch.long, device=self.device)
            for i, k in enumerate(chunk):
                n = len(k) - 1
                ids[i, L - n :] = torch.tensor(k[:-1], dtype=torch.long)
                am[i, L - n :] = 1
            position_ids = (am.cumsum(1) - 1).clamp_(min=0)
            cache = DynamicCache()
            self.model(input_ids=ids, attention_mask=am, position_ids=position_ids, use_cache=True, **{self.kw: cache})
            kv = layer_kv(cache)
            for i, k in enumerate(chunk):
                n = len(k) - 1
                self.prompts[k] = [(keys[i, :, L - n :].clone(), values[i, :, L - n :].clone()) for keys, values in kv]
        return int(sum(len(k) - 1 for k in body))

    def _set(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.kv[layer] = [keys, values]
        cl = self.cache.layers[layer]
        cl.keys, cl.values = keys, values

    def users(self, prompt: Prompt) -> int:
        return 0

    def place(self, slot: int, prompt: Prompt, share: bool = True) -> None:
        """Start a row for `prompt` in `slot` (== n: a new slot); the prompt's cache is always copied."""
        pre = self.prompts[prompt]
        n_pre = len(prompt) - 1
        T = self.mask.shape[1]
        if n_pre > T:  # widen every row on the left
            extra = n_pre - T
            for layer, (k, v) in enumerate(self.kv):
                self._set(layer, torch.cat([k.new_zeros(*k.shape[:2], extra, k.shape[3]), k], 2),
                          torch.cat([v.new_zeros(*v.shape[:2], extra, v.shape[3]), v], 2))
            self.mask = torch.cat([self.mask.new_zeros(self.mask.shape[0], extra), self.mask], 1)
            T = n_pre
        if slot == self.n:
            for layer, (k, v) in enumerate(self.kv):
                self._set(layer, torch.cat([k, k.new_zeros(1, *k.shape[1:])]), torch.cat([v, v.new_zeros(1, *v.shape[1:])]))
            self.mask = torch.cat([self.mask, self.mask.new_zeros(1, T)])
            self.n += 1
        for layer, (k, v) in enumerate(self.kv):
            k[slot].zero_()
            v[slot].zero_()
            if n_pre:
                k[slot, :, T - n_pre :] = pre[layer][0]
                v[slot, :, T - n_pre :] = pre[layer][1]
        self.mask[slot] = 0
        self.mask[slot, T - n_pre :] = 1
        self.pos[slot] = n_pre

    def remove(self, slot: int) -> None:
        last = self.n - 1
        if slot != last:
            for k, v in self.kv:
                k[slot] = k[last]
                v[slot] = v[last]
            self.mask[slot] = self.mask[last]
            self.pos[slot] = self.pos[last]
        for layer, (k, v) in enumerate(self.kv):
            self._set(layer, k[:last], v[:last])
        self.mask = self.mask[:last]
        self.n = last
        self._trim()

    def _trim(self) -> None:
        if self.mask.shape[1] < 64:
            return
        used = self.mask.any(0)
        first = int(used.int().argmax()) if bool(used.any()) else self.mask.shape[1]
        if first >= 32:
            for layer, (k, v) in enumerate(self.kv):
                self._set(layer, k[:, :, first:], v[:, :, first:])
            self.mask = self.mask[:, first:]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        n = self.n
        mask = torch.cat([self.mask, self.mask.new_ones(n, 1)], 1)
        pos = torch.from_numpy(self.pos[:n]).to(self.device).unsqueeze(1)
        out = self.model(input_ids=tokens.unsqueeze(1), attention_mask=mask, position_ids=pos, use_cache=True,
                         **{self.kw: self.cache})
        self.kv = [[k, v] for k, v in layer_kv(self.cache)]
        self.mask = mask
        self.pos[:n] += 1
        self._trim()
        return out.logits[:, -1]
