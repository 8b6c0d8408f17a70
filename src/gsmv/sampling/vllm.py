"""Optional vLLM backend (`pip install gsmv[vllm]`): the same Sample records as HFSampler.

The calculator runs by stop-and-resume, with no logits processor: every request
generates until its text produces `=` (a stop string, kept in the output), EOS or its
token budget. At a stop the driver decodes the row's tokens; when they end in an
open `<<expr=` it evaluates `expr` and appends the tokens of `result>>` (marked
forced), with the same rules as the HF sampler for tokens that merge `=` with more
text (gsmv.sampling.base.Calculator). Then all stopped rows resume together as new
prompts = prompt + everything so far; prefix caching makes the resume cost only the
new tokens. A `=` outside an annotation costs one extra round and nothing else.

Each round's requests carry their own seed (derived from the request seed and the
round), so results do not depend on which other requests share a call. The engine is
anything with vLLM's offline `LLM.generate(prompts, sampling_params, use_tqdm=...)`
returning outputs with `.outputs[0].token_ids / .finish_reason / .stop_reason`; the
tests drive this logic with a fake engine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any

from gsmv.errors import GsmvError
from gsmv.sampling.base import Calculator, Request, Sample, SamplerStats, SamplingParams, eos_ids, make_sample

STOP = "="
_ENGINES: dict[tuple, Any] = {}  # the live vLLM engine of this process (see VLLMSampler.from_pretrained)
_MASK63 = (1 << 63) - 1


def release_engines() -> None:
    """Drop the cached engines so their GPU memory is free: for another engine, or for a stage that trains or
    scores (the pipeline calls this before every stage that does not sample). Not yet run on a GPU."""
    if not _ENGINES:
        return
    _ENGINES.clear()
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def round_seed(seed: int, round_: int) -> int:
    """The seed of one resume round of a request (vLLM seeds each request's own generator)."""
    return (seed + round_ * 0x9E3779B97F4A7C15) & _MASK63


class _Row:
    __slots__ = ("req", "tokens", "forced", "calc_calls", "finished", "done")

    def __init__(self, req: Request):
        self.req = req
        self.tokens: list[int] = []
        self.forced: list[bool] = []
        self.calc_calls = 0
        self.finished = False
        self.done = False


class VLLMSampler:
    """Calculator-aware sampling on a vLLM `LLM` (or any engine with its generate API).

    make_params builds the engine's sampling parameters from keyword arguments
    (vllm.SamplingParams for the real engine). chunk bounds how many requests are in
    flight at once (vLLM schedules them; results stream out chunk by chunk).
    """

    def __init__(self, engine: Any, tokenizer: Any, params: SamplingParams, make_params: Callable[..., Any],
                 chunk: int = 8192):
        self.engine = engine
        self.tokenizer = tokenizer
        self.params = params
        self.make_params = make_params
        self.chunk = chunk
        self.eos = eos_ids(tokenizer)
        self.calculator = Calculator(tokenizer) if params.calculator else None
        self.stats = SamplerStats()

    @classmethod
    def from_pretrained(cls, model_dir: str, params: SamplingParams, *, seed: int = 0,
                        gpu_memory_utilization: float = 0.85, **llm_kwargs: Any) -> VLLMSampler:
        try:
            import vllm
        except ImportError:
            raise GsmvError("sample.backend=vllm needs vLLM: pip install 'gsmv[vllm]' (CUDA GPUs only)") from None
        from transformers import AutoTokenizer

        # One engine per process and model folder: the sample stages of a run (train, val, test, greedy) share
        # it instead of each building a new LLM while the last one still holds its GPU memory. Sampling
        # parameters and seeds travel with each request, so a shared engine gives the same samples.
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # Under torchrun / accelerate launch every rank samples its own shards with its own engine. vLLM's
            # default executor would put every rank's engine on the first GPU; the external-launcher executor
            # makes one in-process worker on this rank's device (LOCAL_RANK), as TRL's colocated vLLM does.
            # Not yet run on a multi-GPU machine.
            llm_kwargs.setdefault("distributed_executor_backend", "external_launcher")
        key = (str(model_dir), seed, gpu_memory_utilization, tuple(sorted(llm_kwargs.items())))
        if key not in _ENGINES:
            release_engines()  # another model (or settings): free the old engine first
            _ENGINES[key] = vllm.LLM(model=model_dir, enable_prefix_caching=True, seed=seed,
                                     gpu_memory_utilization=gpu_memory_utilization, **llm_kwargs)
        tok = AutoTokenizer.from_pretrained(model_dir)
        return cls(_ENGINES[key], tok, params, vllm.SamplingParams)

    def _round_params(self, row: _Row, round_: int) -> Any:
        p = self.params
        kw: dict[str, Any] = {
            "temperature": p.temperature,
            "max_tokens": p.max_new_tokens - len(row.tokens),
            "ignore_eos": p.ignore_eos,
            "skip_special_tokens": False,
        }
        if p.temperature > 0:
            kw["top_p"] = p.top_p
            kw["seed"] = round_seed(row.req.seed, round_)
        stops = ([STOP] if self.calculator is not None else []) + (["\n"] if p.stop_at_newline else [])
        if stops:
            kw["stop"] = stops
            kw["include_stop_str_in_output"] = True
        return self.make_params(**kw)

    def _absorb(self, row: _Row, out: Any) -> None:
        """Append one round's output to the row; decide whether it is done."""
        c = out.outputs[0]
        new = list(c.token_ids)
        eos_hit = False
        if new and new[-1] in self.eos and not self.params.ignore_eos:
            new.pop()
            eos_hit = True
        elif c.finish_reason == "stop" and c.stop_reason is None and not self.params.ignore_eos:
            eos_hit = True  # engines that leave EOS out of token_ids
        room = self.params.max_new_tokens - len(row.tokens)
        new = new[:room]
        row.tokens.extend(new)
        row.forced.extend([False] * len(new))
        self.stats.generated += len(new)
        if eos_hit:
            row.finished = row.done = True
            return
        if self.params.stop_at_newline and c.finish_reason == "stop" and c.stop_reason == "\n" and new:
            row.done = True  # the end of one solution step
            return
        if (c.finish_reason == "stop" and c.stop_reason is not None and self.calculator is not None and new
                and len(row.tokens) < self.params.max_new_tokens):
            f = self.calculator.check(row.tokens)
            if f is not None:
                row.calc_calls += 1
                ids = list(f.ids)
                if f.replace_last:
                    row.tokens.pop()
                    row.forced.pop()
                    self.stats.generated -= 1
                ids = ids[: self.params.max_new_tokens - len(row.tokens)]
                row.tokens.extend(ids)
                row.forced.extend([True] * len(ids))
                self.stats.generated += len(ids)
        if len(row.tokens) >= self.params.max_new_tokens:
            row.done = True
        elif c.finish_reason == "length" or (c.finish_reason == "stop" and not new):
            # a budget the engine enforced, or a stop that produced nothing: no progress possible
            row.done = True

    def generate(self, requests: Iterable[Request]) -> Iterator[Sample]:
        it = iter(requests)
        while True:
            chunk = list(islice(it, self.chunk))
            if not chunk:
                return
            t0 = time.perf_counter()
            rows = [_Row(r) for r in chunk]
            active = rows
            round_ = 0
            while active:
                prompts = [{"prompt_token_ids": list(r.req.prompt_ids) + r.tokens} for r in active]
                params = [self._round_params(r, round_) for r in active]
                outs = self.engine.generate(prompts, params, use_tqdm=False)
                for r, o in zip(active, outs, strict=True):
                    self._absorb(r, o)
                active = [r for r in active if not r.done]
                round_ += 1
                self.stats.steps += 1
            self.stats.seconds += time.perf_counter() - t0
            self.stats.samples += len(rows)
            for r in rows:
                yield make_sample(r.req, r.tokens, r.forced, r.calc_calls, r.finished, self.tokenizer)
