"""gsmv.sampling.base: decode (the sampler's and the calculator's text of token ids)."""

from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from gsmv.sampling.base import _decodes_plainly, decode


def _metaspace_tokenizer() -> PreTrainedTokenizerFast:
    """A SentencePiece-style tokenizer (▁ for spaces, a decoder that drops the leading one)."""
    words = ["<unk>", "</s>", "▁Natalia", "▁sold", "▁48", "/", "2", "=", "24", "<<", ">>", "▁####", "▁clips", "."]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>")


@pytest.mark.parametrize("which", ["ours", "gpt2", "metaspace"])
def test_decode_equals_the_tokenizers_own_decode(which, tiny_tokenizer, merging_tokenizer):
    """decode calls a fast tokenizer's Rust decoder directly; the text must be what tokenizer.decode gives
    (special tokens kept, no clean-up) for any ids: byte pieces, merges, specials, leading spaces."""
    tok = {"ours": tiny_tokenizer, "gpt2": merging_tokenizer, "metaspace": _metaspace_tokenizer()}[which]
    assert _decodes_plainly(type(tok))  # the Rust decoder is called directly: the path under test
    rng = random.Random(0)
    cases = [[], [tok.eos_token_id], [tok.eos_token_id, 5, tok.eos_token_id]]
    cases += [[rng.randrange(len(tok)) for _ in range(rng.randrange(1, 40))] for _ in range(300)]
    for ids in cases:
        want = tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        assert decode(tok, ids) == want, ids
        assert decode(tok, tuple(ids)) == want


def test_decode_without_a_backend_uses_the_tokenizers_decode():
    class SlowTokenizer:  # a Python-only tokenizer: no backend_tokenizer
        def decode(self, ids, skip_special_tokens, clean_up_tokenization_spaces):
            assert skip_special_tokens is False and clean_up_tokenization_spaces is False
            return "|".join(map(str, ids))

    assert decode(SlowTokenizer(), (3, 1, 4)) == "3|1|4"


def test_decode_keeps_a_fast_tokenizers_own_decoding_override(tiny_tokenizer):
    """A tokenizer class that overrides _decode (some model families do) is decoded through it."""

    class Shouting(type(tiny_tokenizer)):
        def _decode(self, token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=None, **kwargs):
            return super()._decode(token_ids, skip_special_tokens, clean_up_tokenization_spaces, **kwargs).upper()

    tok = Shouting(tokenizer_object=tiny_tokenizer.backend_tokenizer, eos_token=tiny_tokenizer.eos_token)
    ids = tiny_tokenizer.encode("Tom has 3 apples.", add_special_tokens=False)
    assert decode(tok, ids) == "TOM HAS 3 APPLES."
