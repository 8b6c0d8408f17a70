"""Shared fixtures: tiny data, tokenizers and models built locally (no hub, no network)."""

from __future__ import annotations

import os

# Tests never touch the network: hub lookups fail at once instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from gsmv.config import RunConfig, load_config  # noqa: E402

TINY_DATA = Path(__file__).parent / "assets" / "tiny_gsm8k"
from tiny_overrides import TINY_OVERRIDES, TINY_VOCAB  # noqa: E402


def tiny_texts() -> list[str]:
    """Questions and answers of the tiny train split: the text tiny tokenizers learn from."""
    out = []
    for line in (TINY_DATA / "train.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out += [rec["question"] + "\n", rec["answer"]]
    return out


@pytest.fixture(scope="session")
def tiny_data_dir() -> Path:
    """tests/assets/tiny_gsm8k: 240 train and 40 test synthetic GSM8K-format problems."""
    return TINY_DATA


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """Our digit-split byte-level BPE trained on the tiny text (vocab ~300)."""
    from gsmv.models.tokenizer import train_tokenizer

    return train_tokenizer(tiny_texts(), TINY_VOCAB)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A saved random 2-layer LlamaForCausalLM (hidden 64) + the tiny tokenizer, loadable by path."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        eos_token_id=tiny_tokenizer.eos_token_id,
        pad_token_id=tiny_tokenizer.pad_token_id,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


def _gpt2_style_tokenizer():
    """A GPT-2-style byte-level BPE (no digit split, no forced `=` token, no pad) on the tiny text.

    Like the real GPT-2 tokenizer it merges `=` with neighbours (` =`, `=<<` ...), which the
    sampler's calculator must cope with.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB + 100,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tiny_texts(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        clean_up_tokenization_spaces=False,
    )


@pytest.fixture(scope="session")
def tiny_gpt2_tokenizer():
    return _gpt2_style_tokenizer()


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory, tiny_gpt2_tokenizer) -> Path:
    """A saved random 2-layer GPT2LMHeadModel (n_embd 64) + a GPT-2-style tokenizer (no pad token)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tiny_gpt2_tokenizer),
        n_positions=256,
        n_embd=64,
        n_layer=2,
        n_head=4,
        bos_token_id=tiny_gpt2_tokenizer.eos_token_id,
        eos_token_id=tiny_gpt2_tokenizer.eos_token_id,
    )
    model = GPT2LMHeadModel(config)
    folder = tmp_path_factory.mktemp("tiny_gpt2")
    model.save_pretrained(folder)
    tiny_gpt2_tokenizer.save_pretrained(folder)
    return folder




@pytest.fixture
def tiny_cfg(tmp_path, tiny_data_dir) -> RunConfig:
    """A RunConfig for the tiny data and the "tiny" preset; run folder tmp_path/t. Tweak fields freely."""
    return load_config(None, [f"data.dir={tiny_data_dir}", f"out_dir={tmp_path}", "name=t", *TINY_OVERRIDES])


@pytest.fixture(scope="session")
def smoke_synth_run(tmp_path_factory) -> Path:
    """A finished smoke-synth run folder (whole pipeline, tiny model): shared read-only by the tests that need a
    trained generator and verifier; copy it before changing it."""
    from gsmv import cli

    out = tmp_path_factory.mktemp("smoke_synth")
    assert cli.main(["run", "--config", "smoke-synth", f"out_dir={out}", "threads=2"]) == 0
    return out / "smoke-synth"
