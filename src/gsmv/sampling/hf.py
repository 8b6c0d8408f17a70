"""Batched, calculator-aware sampling for any Hugging Face causal LM, with a KV cache.

    sampler = HFSampler(model, tokenizer, SamplingParams(temperature=0.7), batch_size=256)
    for sample in sampler.generate(requests): ...

Structure: one engine-agnostic driver (this module: continuous batching, per-row seeded sampling, the
calculator state machine, EOS / newline / max-token stops) over one of two engines that own the KV cache and
the forward pass (the protocol: gsmv.sampling.base.Engine):

- `LlamaEngine` (llama_engine.py), the fast path for Llama-architecture models: its own decode step, a prompt
  cache shared by a problem's samples and a paged cache of generated tokens.
- `GenericEngine` (generic_engine.py), for every other causal LM (GPT-2, ...): the model's own forward over a
  right-aligned DynamicCache; a prompt's prefix cache is computed once and copied into each row that samples it.

Continuous batching: a row that stops frees its slot for the next pending request
at once, so the batch stays full; at the end of the input the batch shrinks
(the last row moves into the hole). A prompt enters the cache without its last
token, which is fed as the row's first decode step; so every token of a sample,
including the first, is chosen by the same code from the same kind of step.

Forced (calculator) tokens are fed one per step, in place of the sampled token:
simple, and the cost is one step per forced token of a row (a few per annotation).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator, Sized
from typing import Any

import torch

from gsmv.sampling.base import (
    Calculator,
    Request,
    Sample,
    SamplerStats,
    SamplingParams,
    choose_tokens,
    eos_ids,
    make_sample,
    newline_table,
    uniform_noise,
)
from gsmv.sampling.generic_engine import GenericEngine
from gsmv.sampling.llama_engine import LlamaEngine, llama_unsupported

__all__ = ["GenericEngine", "HFSampler", "LlamaEngine", "SamplerStats", "llama_unsupported"]


class _Row:
    __slots__ = ("req", "tokens", "forced", "queue", "calc_calls", "next_input")

    def __init__(self, req: Request):
        self.req = req
        self.tokens: list[int] = []
        self.forced: list[bool] = []
        self.queue: deque[int] = deque()
        self.calc_calls = 0
        self.next_input = req.prompt_ids[-1]


class HFSampler:
    """Continuous-batching sampler over a HF causal LM (see the module docstring).

    fast: True forces the Llama fast path (error if unsupported), False the generic path,
    None picks the fast path when the model supports it.
    """

    def __init__(self, model: Any, tokenizer: Any, params: SamplingParams, batch_size: int = 256,
                 fast: bool | None = None, lookahead: int = 64):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.params = params
        self.batch_size = batch_size
        self.lookahead = max(lookahead, 1)
        why = llama_unsupported(model)
        if fast and why:
            raise ValueError(f"the Llama fast path cannot run this model: {why}")
        self.fast = why is None if fast is None else fast
        self.eos = eos_ids(tokenizer, model)
        vocab = model.get_output_embeddings().weight.shape[0] if model.get_output_embeddings() is not None else None
        self.calculator = Calculator(tokenizer, vocab) if params.calculator else None
        self.newline = newline_table(tokenizer, vocab) if params.stop_at_newline else None
        self.stats = SamplerStats()

    def _engine(self, slots: int) -> LlamaEngine | GenericEngine:
        if self.fast:
            return LlamaEngine(self.model, slots, self.params.max_new_tokens)
        return GenericEngine(self.model, slots)

    # Long on purpose: the decode loop of the hot path (refill, step, calculator, retire) shares its state
    # through closures; splitting it into methods would add attribute lookups to every step.
    def generate(self, requests: Iterable[Request]) -> Iterator[Sample]:
        src = iter(requests)
        pending: deque[Request] = deque()
        p = self.params
        st = self.stats

        def pull(k: int) -> None:
            while len(pending) < k:
                r = next(src, None)
                if r is None:
                    return
                if not r.prompt_ids:
                    raise ValueError(f"{r.problem_id}/{r.sample_idx}: empty prompt")
                pending.append(r)

        def admit(slot: int) -> bool:
            """Place the next request in `slot` (== len(rows): a new slot). False when none is left."""
            pull(1)
            if not pending:
                return False
            if not engine.has(pending[0].prompt_ids):
                # Prefill the next few distinct prompts together: one forward call, not one per problem.
                pull(self.lookahead)
                st.prefill_tokens += engine.prepare([r.prompt_ids for r in list(pending)[: self.lookahead]])
            r = pending.popleft()
            pull(1)
            # Share the prompt's cache when another sample of it is running or comes next.
            share = engine.users(r.prompt_ids) > 0 or bool(pending and pending[0].prompt_ids == r.prompt_ids)
            engine.place(slot, r.prompt_ids, share)
            if slot == len(rows):
                rows.append(_Row(r))
            else:
                rows[slot] = _Row(r)
            return True

        rows: list[_Row] = []
        slots = self.batch_size
        if isinstance(requests, Sized):
            # A known count (gsmv solve, search steps): no more slots than requests. The Llama engine sizes its
            # page pool by slots up front (about 0.9 GB at 1024 slots for cpu-1m and 160 new tokens).
            slots = max(1, min(slots, len(requests)))
        with torch.inference_mode():
            engine = self._engine(slots)
        while True:
            t0 = time.perf_counter()
            with torch.inference_mode():
                while len(rows) < slots and admit(len(rows)):
                    pass
                if not rows:
                    st.seconds += time.perf_counter() - t0
                    return
                feed = torch.tensor([r.next_input for r in rows], dtype=torch.long, device=engine.device)
                logits = engine.step(feed)
                if p.temperature > 0:
                    u = uniform_noise([r.req.seed for r in rows], [len(r.tokens) for r in rows])
                    chosen = choose_tokens(logits, torch.from_numpy(u), p.temperature, p.top_p).tolist()
                else:
                    chosen = logits.argmax(-1).tolist()
            st.steps += 1
            st.rows += len(rows)
            done: list[tuple[int, bool]] = []
            for i, (row, tok) in enumerate(zip(rows, chosen, strict=True)):
                if row.queue:
                    row.tokens.append(row.queue.popleft())
                    row.forced.append(True)
                else:
                    if tok in self.eos and not p.ignore_eos:
                        done.append((i, True))
                        continue
                    row.tokens.append(tok)
                    row.forced.append(False)
                    if self.calculator is not None and len(row.tokens) < p.max_new_tokens:
                        self._calculate(row)
                st.generated += 1
                row.next_input = row.tokens[-1]
                if len(row.tokens) >= p.max_new_tokens:
                    done.append((i, False))
                elif self.newline is not None and not row.forced[-1] and not row.queue and self.newline[row.tokens[-1]]:
                    done.append((i, False))  # end of a step (stop_at_newline)
            out = []
            # Highest slot first, so moving the last row into a hole never moves a finished row.
            with torch.inference_mode():
                for i, finished in sorted(done, reverse=True):
                    row = rows[i]
                    out.append(make_sample(row.req, row.tokens, row.forced, row.calc_calls, finished, self.tokenizer))
                    if not admit(i):
                        engine.remove(i)
                        last = rows.pop()
                        if i < len(rows):
                            rows[i] = last
            st.seconds += time.perf_counter() - t0
            st.samples += len(out)
            yield from out

    def _calculate(self, row: _Row) -> None:
        f = self.calculator.check(row.tokens)  # type: ignore[union-attr]
        if f is None:
            return
        row.calc_calls += 1
        if f.replace_last:
            row.tokens[-1] = f.ids[0]
            row.forced[-1] = True
            row.queue.extend(f.ids[1:])
        else:
            row.queue.extend(f.ids)
