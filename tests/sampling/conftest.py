"""Fixtures of the sampler tests (helpers live in sampling_helpers.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from sampling_helpers import lively


@pytest.fixture(scope="session")
def tiny_llama(tiny_llama_dir):
    from gsmv.models.loading import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(tiny_llama_dir, dtype=torch.float32, device="cpu")
    return lively(model), tok


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_gpt2_dir):
    from gsmv.models.loading import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(tiny_gpt2_dir, dtype=torch.float32, device="cpu")
    return lively(model, std=0.1), tok


@pytest.fixture(scope="session")
def merging_tokenizer(tiny_gpt2_tokenizer):
    """A GPT-2-style tokenizer that also has tokens merging `=` with digits ("=1", "=3") and a
    whole "=15>>", like real BPEs do."""
    tok = copy.deepcopy(tiny_gpt2_tokenizer)
    tok.add_tokens(["=1", "=3", "=15>>"])
    return tok
