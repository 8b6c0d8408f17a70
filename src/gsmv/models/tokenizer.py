"""Tokenizers: train a GSM8K BPE for from-scratch models; check any HF tokenizer.

The trained tokenizer is byte-level (every string round-trips exactly, whatever its
spaces, newlines or unicode), splits numbers into single digits (arithmetic is
easier to learn digit by digit, and the calculator's forced results tokenize the
same way as the training text), and keeps `<<`, `>>`, `=` and `####` as single
tokens so the sampler's calculator sees an annotation open and close cleanly.

    tok = train_tokenizer(texts, vocab_size=2048)
    tok.save_pretrained(folder); AutoTokenizer.from_pretrained(folder)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from gsmv.errors import GsmvError

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
VALUE_TOKEN = "<|value|>"  # reserved for the verifier's token head (never appears in text)
SPECIAL_TOKENS = [EOS_TOKEN, PAD_TOKEN, VALUE_TOKEN]
# Always one token each: the calculator opens at `<<`, computes at `=`, closes at `>>`;
# `####` starts the final answer.
STRUCTURE_TOKENS = ["<<", ">>", "=", "####"]
MIN_VOCAB = 256 + len(SPECIAL_TOKENS) + len(STRUCTURE_TOKENS)


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level, digit-split BPE on `texts` and wrap it for transformers."""
    if vocab_size < MIN_VOCAB:
        raise GsmvError(f"tokenizer vocab_size {vocab_size} is too small: need >= {MIN_VOCAB} (256 bytes + specials)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            # use_regex keeps GPT-2's word / punctuation / space pieces; no prefix space so that
            # encode(prompt) + encode(solution) equals encode(prompt + solution) at a newline boundary.
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_strings(texts), trainer=trainer)
    # Added (non-special) tokens are cut out of the text before pre-tokenization, so they
    # can never merge with their neighbours; all their characters are printable ASCII, which
    # the byte-level decoder maps to themselves.
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in STRUCTURE_TOKENS])
    return wrap(tok)


def _strings(texts: Iterable[str]) -> Iterator[str]:
    for t in texts:
        if not isinstance(t, str):
            raise GsmvError(f"train_tokenizer: expected str texts, got {type(t).__name__}")
        yield t


def wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    """Wrap a `tokenizers.Tokenizer` with our special tokens; no BOS, no cleanup of spaces on decode."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens={"value_token": VALUE_TOKEN},
        clean_up_tokenization_spaces=False,
        padding_side="right",
        model_max_length=1_000_000,
    )


def check_tokenizer(tok: PreTrainedTokenizerBase, where: str = "tokenizer") -> PreTrainedTokenizerBase:
    """Make sure `tok` has what the stages need: an EOS token, and a pad token (EOS when missing).

    Returns the same tokenizer (pad set in place). Raises GsmvError naming `where` otherwise.
    """
    if not isinstance(tok, PreTrainedTokenizerBase):
        raise GsmvError(f"{where}: not a Hugging Face tokenizer ({type(tok).__name__})")
    if tok.eos_token is None or tok.eos_token_id is None:
        raise GsmvError(f"{where}: the tokenizer has no EOS token; a solution must end with one")
    if tok.pad_token is None or tok.pad_token_id is None:
        # Pad positions are masked out of every loss, so reusing EOS is safe.
        tok.pad_token = tok.eos_token
    if getattr(tok, "add_bos_token", False) and tok.bos_token is None:
        raise GsmvError(f"{where}: the tokenizer adds a BOS token but has none defined")
    return tok


def value_token_id(tok: PreTrainedTokenizerBase) -> int | None:
    """The id of the reserved `<|value|>` token, or None for tokenizers that lack it (HF models)."""
    tid = tok.convert_tokens_to_ids(VALUE_TOKEN)
    if tid is None or tid == tok.unk_token_id:
        return None
    return int(tid)


def encode_prompt(tok: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """Token ids of a model input (format_prompt(question)), with the tokenizer's BOS if it uses one.

    Prompt and solution are encoded separately, exactly as at sampling time (the sampler encodes
    the prompt alone and generates after it), so training and sampling see the same tokens.
    """
    return list(tok(prompt, add_special_tokens=True)["input_ids"])


def encode_solution(tok: PreTrainedTokenizerBase, solution: str, *, eos: bool = True) -> list[int]:
    """Token ids of a solution text, followed by EOS (the training target)."""
    ids = list(tok(solution, add_special_tokens=False)["input_ids"])
    return ids + [tok.eos_token_id] if eos else ids
