"""Samplers: calculator-assisted generation with per-request seeds (HF engines, optional vLLM)."""

from gsmv.sampling.base import (
    Calculator,
    Request,
    Sample,
    Sampler,
    SamplingParams,
    choose_tokens,
    request_seed,
)

__all__ = ["Calculator", "Request", "Sample", "Sampler", "SamplingParams", "choose_tokens", "request_seed"]
