"""`LlamaEngine`: the sampler's fast path for Llama-architecture models (our from-scratch presets, Llama,
Mistral, Qwen2).

It runs its own decode step from the HF module's weights: fused QKV and gate/up matmuls, residual adds fused
into addmm, RoPE from the model's own rotary tables, and two KV caches. Prompts ("cascade" attention): a
prompt's keys/values are stored once per prompt, not once per sample, and each step attends to them with one
matmul per prompt whose query rows are that problem's samples; with N samples per problem the prompt cache is
read once per step instead of N times, and admitting a row copies nothing. Generated tokens: a paged pool
(16 tokens a page), so a step reads what each row has written rather than the longest row's length for every
row. Prompt and page scores share one softmax. Decoding is bound by reading this cache (memory bandwidth), so
both choices cut the bytes read per token. Prompts are prefilled by the HF module itself, batched and sorted
by length. The engine protocol it implements: gsmv.sampling.base.Engine.
"""

from __future__ import annotations

import heapq
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import DynamicCache

from gsmv.sampling.cache_utils import cache_kwarg, chunks, layer_kv

Prompt = tuple[int, ...]


class _PromptStore:
    """Prompt → store slot with reference counts. A slot whose rows are gone keeps its prompt
    until the slot is needed again (least recently used first), so a late sample of the same
    problem, or a prompt prefilled ahead of its rows, finds it."""

    def __init__(self) -> None:
        self.slot_of: dict[Prompt, int] = {}
        self.owner: list[Prompt | None] = []
        self.refs: list[int] = []
        self.touched: list[int] = []
        self.clock = 0

    def lookup(self, key: Prompt) -> int | None:
        return self.slot_of.get(key)

    def _touch(self, s: int) -> None:
        self.clock += 1
        self.touched[s] = self.clock

    def allocate(self, key: Prompt, keep: set[Prompt]) -> int:
        """A slot for `key`: the least recently used idle slot whose prompt is not in `keep`, else a new one."""
        idle = [i for i, r in enumerate(self.refs) if r == 0 and self.owner[i] not in keep]
        if idle:
            s = min(idle, key=lambda i: self.touched[i])
            del self.slot_of[self.owner[s]]  # type: ignore[arg-type]
        else:
            s = len(self.owner)
            self.owner.append(None)
            self.refs.append(0)
            self.touched.append(0)
        self.owner[s] = key
        self.slot_of[key] = s
        self._touch(s)
        return s

    def acquire(self, s: int) -> None:
        self.refs[s] += 1
        self._touch(s)

    def release(self, s: int) -> None:
        self.refs[s] -= 1
        self._touch(s)


def llama_unsupported(model: Any) -> str | None:
    """Why the Llama fast path cannot run this model (None: it can)."""
    cfg = getattr(model, "config", None)
    mtype = getattr(cfg, "model_type", None)
    if mtype not in ("llama", "mistral", "qwen2"):
        return f"model type {mtype!r} is not Llama-style"
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(inner, "rotary_emb"):
        return "unexpected module layout"
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) in ("dynamic", "longrope"):
        return "position-dependent RoPE scaling"
    window = getattr(cfg, "sliding_window", None)
    if window is not None and getattr(cfg, "use_sliding_window", True) and window < 2048:
        # a wider window never binds on GSM8K-length sequences (LlamaEngine.prepare checks)
        return "sliding-window attention"
    if getattr(cfg, "pretraining_tp", 1) != 1:
        return "pretraining_tp > 1"
    from transformers.activations import ACT2FN

    if getattr(cfg, "hidden_act", "silu") not in ACT2FN:
        return f"activation {cfg.hidden_act!r}"
    return None


class _PagePool:
    """Fixed-size pages of the generated-token cache. Lowest free page first, so pages in use
    stay packed at the front of the pool and one matmul over the pool's front covers them."""

    def __init__(self, capacity: int):
        self.owner = np.full(capacity, -1, dtype=np.int64)  # row slot of each page, -1 = free
        self.free = list(range(capacity))  # a heap
        self.high = 0  # pages [0, high) hold every page in use

    def grow(self, extra: int) -> None:
        old = len(self.owner)
        self.owner = np.concatenate([self.owner, np.full(extra, -1, dtype=np.int64)])
        for p in range(old, old + extra):
            heapq.heappush(self.free, p)

    def alloc(self, row: int) -> int:
        p = heapq.heappop(self.free)
        self.owner[p] = row
        self.high = max(self.high, p + 1)
        return p

    def release(self, p: int) -> None:
        self.owner[p] = -1
        heapq.heappush(self.free, p)
        while self.high and self.owner[self.high - 1] < 0:
            self.high -= 1


class LlamaEngine:
    """Decode step of a Llama-architecture model: shared prompt prefixes and a paged row cache.

    Prompt store: PK/PV [layers, prompt_slots * Hkv, L_cap, D], one entry per distinct prompt
    (without its last token). Row cache: pages of `page` generated tokens, PK-like pool
    [layers, pages * Hkv, page, D]; a row owns ceil(len / page) pages, so a step reads the
    cache a row has, not the longest row's length times the batch (continuous batching
    mixes rows of every length; a dense [rows, max_len] cache read 2-3x more). Scores are
    one matmul over the packed pages, gathered into each row's order for one softmax over
    prefix and pages together; the weighted values go back page by page (index_add).
    A row's generated token i has RoPE position plen + i.
    """

    # Long on purpose: it lays out every weight and buffer the hot loop reads (one place to see the memory).
    def __init__(self, model: Any, n_slots: int, max_new_tokens: int, page: int = 16):
        from transformers.activations import ACT2FN

        why = llama_unsupported(model)
        if why is not None:
            raise ValueError(f"LlamaEngine: {why}")
        cfg = model.config
        self.model = model
        self.n_slots = n_slots
        self.s_max = max_new_tokens + 1
        self.page = page
        self.H = cfg.num_attention_heads
        self.Hkv = getattr(cfg, "num_key_value_heads", None) or self.H
        self.D = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.H
        self.g = self.H // self.Hkv
        self.act = ACT2FN[cfg.hidden_act]
        self.window = getattr(cfg, "sliding_window", None) if getattr(cfg, "use_sliding_window", True) else None
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        inner = model.model
        self.embed = inner.embed_tokens.weight.detach()
        self.final_norm = (inner.norm.weight.detach(), inner.norm.variance_epsilon)
        self.lm_head = model.lm_head.weight.detach()
        self.lm_bias = None if getattr(model.lm_head, "bias", None) is None else model.lm_head.bias.detach()
        self.layers = []
        for layer in inner.layers:
            a, m = layer.self_attn, layer.mlp
            qkv_b = None
            if a.q_proj.bias is not None:
                qkv_b = torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]).detach()
            gu_b = None
            if m.gate_proj.bias is not None:
                gu_b = torch.cat([m.gate_proj.bias, m.up_proj.bias]).detach()
            self.layers.append({
                "ln1": (layer.input_layernorm.weight.detach(), layer.input_layernorm.variance_epsilon),
                "ln2": (layer.post_attention_layernorm.weight.detach(), layer.post_attention_layernorm.variance_epsilon),
                "qkv": torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).detach(),
                "qkv_b": qkv_b,
                "o": a.o_proj.weight.detach().t(),
                "o_b": None if a.o_proj.bias is None else a.o_proj.bias.detach(),
                "gu": torch.cat([m.gate_proj.weight, m.up_proj.weight]).detach(),
                "gu_b": gu_b,
                "down": m.down_proj.weight.detach().t(),
                "down_b": None if m.down_proj.bias is None else m.down_proj.bias.detach(),
            })
        self.n_layers = len(self.layers)
        self.scale = float(inner.layers[0].self_attn.scaling)
        self.cache_kw = cache_kwarg(inner)
        n_pages = n_slots * -(-self.s_max // page)
        kv = (self.n_layers, n_pages * self.Hkv, page, self.D)
        self.K = torch.zeros(kv, dtype=self.dtype, device=self.device)
        self.V = torch.zeros(kv, dtype=self.dtype, device=self.device)
        self.pool = _PagePool(n_pages)
        self.row_pages: list[list[int]] = [[] for _ in range(n_slots)]
        self.store = _PromptStore()
        self.PK = torch.zeros(self.n_layers, 0, 0, self.D, dtype=self.dtype, device=self.device)
        self.PV = self.PK
        self.plen_store: list[int] = []
        self._rope_len = 0
        self._ensure_rope(self.s_max + 128)
        self.n = 0
        self.pslot = np.zeros(n_slots, dtype=np.int64)
        self.plen = np.zeros(n_slots, dtype=np.int64)
        self.slen = np.zeros(n_slots, dtype=np.int64)
        self.shared = np.zeros(n_slots, dtype=bool)
        self._groups_dirty = True
        self._pages_dirty = True

    # -- prompts

    def _ensure_rope(self, length: int) -> None:
        if length <= self._rope_len:
            return
        length = max(length, 2 * self._rope_len)
        pos = torch.arange(length, device=self.device).unsqueeze(0)
        x = torch.zeros(1, dtype=self.dtype, device=self.device)
        cos, sin = self.model.model.rotary_emb(x, pos)
        cos, sin = cos[0], sin[0]
        half = self.D // 2
        # rotate_half(x) * sin == roll(x, D/2) * [-sin_lo, sin_hi]  (HF builds sin as cat(f, f))
        self.cos = cos.contiguous()
        self.sin_signed = torch.cat([-sin[:, :half], sin[:, half:]], dim=-1).contiguous()
        self._rope_len = length

    def _grow_store(self, n_prompts: int, length: int) -> None:
        P_old = self.PK.shape[1] // self.Hkv
        L_old = self.PK.shape[2]
        if n_prompts <= P_old and length <= L_old:
            return
        P_new = P_old if n_prompts <= P_old else max(n_prompts, 2 * P_old, 4)
        L_new = L_old if length <= L_old else max(length, L_old + L_old // 2, 64)
        shape = (self.n_layers, P_new * self.Hkv, L_new, self.D)
        PK = torch.zeros(shape, dtype=self.dtype, device=self.device)
        PV = torch.zeros(shape, dtype=self.dtype, device=self.device)
        if P_old and L_old:
            PK[:, : P_old * self.Hkv, :L_old] = self.PK
            PV[:, : P_old * self.Hkv, :L_old] = self.PV
        self.PK, self.PV = PK, PV

    def has(self, prompt: Prompt) -> bool:
        return self.store.lookup(prompt) is not None

    def prepare(self, prompts: list[Prompt]) -> int:
        """Prefill the prompts not in the store (all but their last token). Returns tokens prefilled."""
        keys = list(dict.fromkeys(prompts))
        keep = set(keys)
        todo = [(self.store.allocate(k, keep), k) for k in keys if self.store.lookup(k) is None]
        if not todo:
            return 0
        longest = max(len(k) for _, k in todo) + self.s_max
        if self.window is not None and longest > self.window:
            raise ValueError(f"a prompt plus max_new_tokens ({longest} tokens) exceeds the model's sliding window "
                             f"({self.window}): use the generic path (fast=False)")
        self._grow_store(max(s for s, _ in todo) + 1, max(len(k) - 1 for _, k in todo))
        self._ensure_rope(max(len(k) for _, k in todo) + self.s_max)
        while len(self.plen_store) < self.PK.shape[1] // self.Hkv:
            self.plen_store.append(0)
        for s, key in todo:
            self.plen_store[s] = len(key) - 1
        # sorted by length, so each forward call pads little
        body = sorted(((s, key[:-1]) for s, key in todo if len(key) > 1), key=lambda item: len(item[1]))
        for chunk in chunks(body, lambda item: len(item[1])):
            L = max(len(k) for _, k in chunk)
            ids = torch.zeros(len(chunk), L, dtype=torch.long, device=self.device)
            for i, (_, k) in enumerate(chunk):
                ids[i, : len(k)] = torch.tensor(k, dtype=torch.long)
            # Right padding and no mask: causal attention keeps every real position blind to the pad.
            cache = DynamicCache()
            self.model.model(input_ids=ids, use_cache=True, **{self.cache_kw: cache})
            kv = layer_kv(cache)
            for i, (s, k) in enumerate(chunk):
                lo, hi = s * self.Hkv, (s + 1) * self.Hkv
                for layer, (keys_, values) in enumerate(kv):
                    self.PK[layer, lo:hi, : len(k)] = keys_[i, :, : len(k)]
                    self.PV[layer, lo:hi, : len(k)] = values[i, :, : len(k)]
        return int(sum(len(k) for _, k in body))

    # -- rows

    def _free_pages(self, slot: int) -> None:
        for p in self.row_pages[slot]:
            self.pool.release(p)
        self.row_pages[slot] = []

    def users(self, prompt: Prompt) -> int:
        """Rows now reading this prompt from the store."""
        s = self.store.lookup(prompt)
        return 0 if s is None else self.store.refs[s]

    def place(self, slot: int, prompt: Prompt, share: bool = True) -> None:
        """Start a row for `prompt` in `slot` (== n: a new slot).

        share: read the prompt from the store (cascade). Otherwise its cache is copied into the
        row's own pages: better for a prompt only one row samples, since a row of the cascade
        pays the longest active prompt's length, and one with its own pages only its own.
        """
        s = self.store.lookup(prompt)
        assert s is not None, "prepare() the prompt first"
        if slot == self.n:
            self.n += 1
        else:
            if self.shared[slot]:
                self.store.release(int(self.pslot[slot]))
            self._free_pages(slot)
        L = len(prompt) - 1
        self.pslot[slot] = s
        self.shared[slot] = share
        if share:
            self.store.acquire(s)
            self.plen[slot], self.slen[slot] = L, 0
        else:
            P, Hkv = self.page, self.Hkv
            for c in range(-(-L // P)):
                pg = self._alloc_page(slot)
                a, b = c * P, min(L, (c + 1) * P)
                self.K[:, pg * Hkv : (pg + 1) * Hkv, : b - a] = self.PK[:, s * Hkv : (s + 1) * Hkv, a:b]
                self.V[:, pg * Hkv : (pg + 1) * Hkv, : b - a] = self.PV[:, s * Hkv : (s + 1) * Hkv, a:b]
            self.plen[slot], self.slen[slot] = 0, L
        self._groups_dirty = self._pages_dirty = True

    def _alloc_page(self, slot: int) -> int:
        if not self.pool.free:  # rows holding their prompts can outgrow the initial pool
            extra = max(self.n_slots, len(self.pool.owner) // 2)
            old = len(self.pool.owner)
            self.K = torch.cat([self.K, self.K.new_zeros(self.n_layers, extra * self.Hkv, self.page, self.D)], 1)
            self.V = torch.cat([self.V, self.V.new_zeros(self.n_layers, extra * self.Hkv, self.page, self.D)], 1)
            self.pool.grow(extra)
            assert len(self.pool.owner) == old + extra
        p = self.pool.alloc(slot)
        self.row_pages[slot].append(p)
        return p

    def remove(self, slot: int) -> None:
        """Drop a row; the last row takes its slot (its pages stay where they are)."""
        last = self.n - 1
        if self.shared[slot]:
            self.store.release(int(self.pslot[slot]))
        self._free_pages(slot)
        if slot != last:
            self.row_pages[slot] = self.row_pages[last]
            self.row_pages[last] = []
            for p in self.row_pages[slot]:
                self.pool.owner[p] = slot
            for arr in (self.pslot, self.plen, self.slen, self.shared):
                arr[slot] = arr[last]
        self.n = last
        self._groups_dirty = self._pages_dirty = True

    # -- step

    def _groups(self) -> None:
        ps = self.pslot[: self.n].tolist()
        ranks, count = [], {}
        for s in ps:
            r = count.get(s, 0)
            ranks.append(r)
            count[s] = r + 1
        self.Pn = max(ps) + 1
        self.R = max(count.values())
        # (row, kv head) → its row in the [Pn, Hkv, R] layout of the prefix matmuls
        flat = (np.asarray(ps)[:, None] * self.Hkv + np.arange(self.Hkv)[None, :]) * self.R + np.asarray(ranks)[:, None]
        self.pre_idx = torch.from_numpy(flat.reshape(-1)).to(self.device)
        self.Lp = int(self.plen[: self.n].max())
        self._groups_dirty = False

    def _pages(self) -> None:
        n = self.n
        lens = [len(self.row_pages[b]) for b in range(n)]
        Cu = max(lens)
        rp = np.zeros((n, Cu), dtype=np.int64)
        for b in range(n):
            rp[b, : lens[b]] = self.row_pages[b]
        U = self.pool.high
        own = self.pool.owner[:U]
        hole = own < 0
        col = np.zeros(U, dtype=np.int64)
        have = np.arange(Cu)[None, :] < np.asarray(lens)[:, None]
        col[rp[have]] = np.broadcast_to(np.arange(Cu), (n, Cu))[have]
        dev = self.device
        self.Cu, self.U, self.rp = Cu, U, rp
        own_g = np.where(hole, 0, own)
        self.rp_flat = torch.from_numpy(rp.reshape(-1)).to(dev)
        self.own_gather = torch.from_numpy(own_g).to(dev)
        self.own_add = torch.from_numpy(np.where(hole, n, own)).to(dev)
        self.page_src = torch.from_numpy(own_g * Cu + col).to(dev)  # page → its (row, column) entry
        self._pages_dirty = False

    # Shapes in step() (n rows now; H query heads in Hkv groups of g; D head size; P tokens a page):
    #   tokens [n] → x [n, hidden];  qkv [n, (H + 2·Hkv)·D];  q [n, Hkv·g·D] (scaled, RoPE applied)
    #   K[l], V[l]   page pool [pages·Hkv, P, D]; `write` [n·Hkv]: each (row, kv head)'s new key slot in it
    #                viewed as [pages·Hkv·P, D]
    #   PK[l], PV[l] prompt store [prompt_slots·Hkv, L_cap, D]; Lp = longest prompt prefix of a live row
    #   rp [n, Cu]   each row's pages in order (Cu = most pages of a row); U = pages [0, U) hold every
    #                page in use; own_gather [U] a page's row (0 for a hole), own_add [U] (n: a hole's
    #                output goes to a dummy row), page_src [U] a page's (row, column) entry in [n·Cu]
    #   pre_idx [n·Hkv] each (row, kv head)'s row in the [Pn prompts, Hkv, R rows a prompt] layout
    #   generated-token scores: s_pages [U·Hkv, g, P] → per row s_suf [n, Hkv, g, Cu·P]
    #   prompt scores: Qp [Pn·Hkv·R, g·D] @ PK → s_pre [n, Hkv, g, Lp]
    #   probs [n, Hkv, g, Lp + Cu·P] (one softmax, mask [n, 1, 1, Lp + Cu·P]) → out [n, Hkv, g, D]
    # Long on purpose: one decode step of every layer, written out so that each tensor is made once; it is
    # the sampler's hot loop (BENCHMARKS.md), and its parts share a dozen per-step index tensors.
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        n, H, Hkv, D, g, P = self.n, self.H, self.Hkv, self.D, self.g, self.page
        for b in np.flatnonzero(self.slen[:n] % P == 0).tolist():
            self._alloc_page(b)
            self._pages_dirty = True
        if self._groups_dirty:
            self._groups()
        if self._pages_dirty:
            self._pages()
        dev = self.device
        Lp, Pn, R, Cu, U = self.Lp, self.Pn, self.R, self.Cu, self.U
        slen_np = self.slen[:n]
        page_now = self.rp[np.arange(n), slen_np // P]
        # where each (row, kv head)'s new key goes in the pool viewed as [pages * Hkv * P, D]
        write = ((page_now[:, None] * Hkv + np.arange(Hkv)[None, :]) * P + (slen_np % P)[:, None]).reshape(-1)
        write_t = torch.from_numpy(write).to(dev)
        slen = torch.from_numpy(slen_np).to(dev)
        plen = torch.from_numpy(self.plen[:n]).to(dev)
        pos = plen + slen
        cos = self.cos[pos].unsqueeze(1)
        sin = self.sin_signed[pos].unsqueeze(1)
        valid = torch.cat([
            torch.arange(Lp, device=dev).unsqueeze(0) < plen.unsqueeze(1),
            torch.arange(Cu * P, device=dev).unsqueeze(0) <= slen.unsqueeze(1),
        ], dim=1)
        mask = torch.zeros(n, 1, 1, Lp + Cu * P, device=dev).masked_fill_(~valid[:, None, None, :], float("-inf"))
        if Lp:
            Qp = torch.zeros(Pn * Hkv * R, g * D, dtype=self.dtype, device=dev)
            Pp = torch.zeros(Pn * Hkv * R, g * Lp, dtype=self.dtype, device=dev)
        x = F.embedding(tokens, self.embed)
        half = D // 2
        for li, w in enumerate(self.layers):
            h = F.rms_norm(x, (x.shape[-1],), w["ln1"][0], w["ln1"][1])
            qkv = F.linear(h, w["qkv"], w["qkv_b"])
            qk = qkv[:, : (H + Hkv) * D].view(n, H + Hkv, D)
            qk = torch.addcmul(qk * cos, torch.roll(qk, half, dims=-1), sin)
            q = (qk[:, :H] * self.scale).reshape(n, Hkv * g * D)
            KP, VP = self.K[li], self.V[li]
            KP.view(-1, D).index_copy_(0, write_t, qk[:, H:].reshape(n * Hkv, D))
            VP.view(-1, D).index_copy_(0, write_t, qkv[:, (H + Hkv) * D :].reshape(n * Hkv, D))
            # generated tokens: one matmul over the packed pages, then each row's pages in order
            s_pages = torch.bmm(q.index_select(0, self.own_gather).view(U * Hkv, g, D), KP[: U * Hkv].transpose(1, 2))
            s_suf = s_pages.view(U, Hkv * g * P).index_select(0, self.rp_flat).view(n, Cu, Hkv, g, P)
            s_suf = s_suf.permute(0, 2, 3, 1, 4).reshape(n, Hkv, g, Cu * P)
            if Lp:
                Qp.index_copy_(0, self.pre_idx, q.view(n * Hkv, g * D))
                s_pre = torch.bmm(Qp.view(Pn * Hkv, R * g, D), self.PK[li, : Pn * Hkv, :Lp].transpose(1, 2))
                s_pre = s_pre.view(Pn * Hkv * R, g * Lp).index_select(0, self.pre_idx).view(n, Hkv, g, Lp)
                scores = torch.cat([s_pre, s_suf], dim=-1)
            else:
                scores = s_suf
            if scores.dtype != torch.float32:
                scores = scores.float()
            probs = torch.softmax(scores.add_(mask), dim=-1).to(self.dtype)
            p_rows = probs[..., Lp:].unflatten(-1, (Cu, P)).permute(0, 3, 1, 2, 4).reshape(n * Cu, Hkv * g * P)
            p_pages = p_rows.index_select(0, self.page_src).view(U * Hkv, g, P)
            o_pages = torch.bmm(p_pages, VP[: U * Hkv]).view(U, Hkv, g, D)
            out = torch.zeros(n + 1, Hkv, g, D, dtype=self.dtype, device=dev).index_add_(0, self.own_add, o_pages)[:n]
            if Lp:
                Pp.index_copy_(0, self.pre_idx, probs[..., :Lp].reshape(n * Hkv, g * Lp))
                o_pre = torch.bmm(Pp.view(Pn * Hkv, R * g, Lp), self.PV[li, : Pn * Hkv, :Lp])
                out = out + o_pre.view(Pn * Hkv * R, g * D).index_select(0, self.pre_idx).view(n, Hkv, g, D)
            attn = out.reshape(n, H * D)
            if w["o_b"] is None:
                x = torch.addmm(x, attn, w["o"])
            else:
                x = x + F.linear(attn, w["o"].t(), w["o_b"])
            h = F.rms_norm(x, (x.shape[-1],), w["ln2"][0], w["ln2"][1])
            gu = F.linear(h, w["gu"], w["gu_b"])
            inter = gu.shape[-1] // 2
            a = self.act(gu[:, :inter]).mul_(gu[:, inter:])
            if w["down_b"] is None:
                x = torch.addmm(x, a, w["down"])
            else:
                x = x + F.linear(a, w["down"].t(), w["down_b"])
        h = F.rms_norm(x, (x.shape[-1],), self.final_norm[0], self.final_norm[1])
        self.slen[:n] += 1
        return F.linear(h, self.lm_head, self.lm_bias)
