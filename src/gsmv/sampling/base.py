"""What every sampler shares: requests, Sample records, seeding, token choice and the calculator.

A sampler turns `Request`s (one prompt, one sample index, one seed) into `Sample`s.
Two properties hold for every backend:

- Seeding is per request. Sampling noise is a counter-based hash of (request seed,
  token index), not a draw from a global RNG, so a sample does not depend on which
  other requests share its batch, on batch size, on the number of processes, or on
  whether the run was resumed (up to float rounding of the logits across batch shapes).
- The calculator is a per-row state machine on decoded text: when a row's text ends in
  an open `<<expr=`, `expr` is evaluated (gsmv.data.calculator) and `result>>` is
  forced into that row; a failed evaluation lets the model continue on its own.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from gsmv.data.answers import extract_answer, is_correct
from gsmv.data.calculator import evaluate, open_annotation

ANNOTATION_CLOSE = ">>"


@dataclass(frozen=True)
class Request:
    problem_id: str
    sample_idx: int
    prompt_ids: tuple[int, ...]
    seed: int  # see request_seed
    reference: str | None = None  # the normalized reference answer, when known


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 256
    calculator: bool = True
    # Benchmarks only: never stop at EOS, so every method decodes exactly max_new_tokens.
    ignore_eos: bool = False
    # Stop a row after a generated token that contains a newline (kept in the output, `finished` False):
    # one solution step per request, for step-level search (gsmv.search).
    stop_at_newline: bool = False


@dataclass
class Sample:
    problem_id: str
    sample_idx: int
    text: str  # decode(tokens): the generated solution only, annotations included, no EOS
    tokens: list[int]  # generated tokens, EOS excluded (`finished` says whether it was reached)
    final_answer: str | None
    is_correct: bool | None  # None when the request carried no reference
    calc_calls: int  # calculator results inserted (failed evaluations are not counted)
    forced: list[bool] = field(default_factory=list)  # per token: written by the calculator
    finished: bool = False  # stopped at EOS (False: cut at max_new_tokens)

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    def as_row(self) -> dict[str, Any]:
        return {
            "problem_id": self.problem_id,
            "sample_idx": self.sample_idx,
            "text": self.text,
            "tokens": self.tokens,
            "n_tokens": self.n_tokens,
            "final_answer": self.final_answer,
            "is_correct": self.is_correct,
            "calc_calls": self.calc_calls,
            "forced": self.forced,
            "finished": self.finished,
        }


@dataclass
class SamplerStats:
    steps: int = 0
    rows: int = 0  # sum over steps of the batch size: tokens run through the model in decode
    generated: int = 0  # tokens appended to samples (forced included)
    prefill_tokens: int = 0
    samples: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.generated / self.seconds if self.seconds > 0 else 0.0


class Engine(Protocol):
    """What HFSampler's driver needs from an engine (LlamaEngine, GenericEngine): a KV cache over `n_slots`
    rows, each row sampling one request, and one decode step for all rows at once."""

    device: torch.device

    def has(self, prompt: tuple[int, ...]) -> bool:
        """The prompt's prefix (all but its last token) is in the prompt cache."""
        ...

    def prepare(self, prompts: list[tuple[int, ...]]) -> int:
        """Prefill the prompts not cached yet (batched); returns the tokens prefilled."""
        ...

    def users(self, prompt: tuple[int, ...]) -> int:
        """Rows now sampling this prompt."""
        ...

    def place(self, slot: int, prompt: tuple[int, ...], share: bool = True) -> None:
        """Start row `slot` (a finished row's slot, or the row count for a new row) on a prepared prompt;
        share: the prompt's cache may be shared with other rows (it is sampled again)."""
        ...

    def remove(self, slot: int) -> None:
        """Free row `slot` and move the last row into it, as the driver does with its own rows."""
        ...

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row ([rows] long); returns next-token logits [rows, vocab]."""
        ...


class Sampler(Protocol):
    params: SamplingParams

    def generate(self, requests: Iterable[Request]) -> Iterator[Sample]:
        """Samples in completion order (not request order). Requests are pulled lazily."""
        ...


# ---------------------------------------------------------------- seeding and noise

_MASK64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def request_seed(base_seed: int, problem_id: str, sample_idx: int) -> int:
    """A 63-bit seed from (run seed, problem, sample index); the same in every process and run."""
    h = hashlib.blake2b(f"{base_seed}\x1f{problem_id}\x1f{sample_idx}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


def _mix64(x: np.ndarray) -> np.ndarray:
    # splitmix64's finalizer; numpy uint64 arrays wrap modulo 2**64.
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


def uniform_noise(seeds: Sequence[int] | np.ndarray, steps: Sequence[int] | np.ndarray) -> np.ndarray:
    """One uniform in [0, 1) per (seed, step): output `step` of the splitmix64 stream started at `seed`.

    float32 with 24 random bits (exact in float32, never 1.0).
    """
    s = np.asarray(seeds, dtype=np.uint64)
    t = np.asarray(steps, dtype=np.uint64)
    h = _mix64(s + (t + np.uint64(1)) * _GOLDEN)
    return (h >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)


def choose_tokens(logits: torch.Tensor, u: torch.Tensor, temperature: float, top_p: float = 1.0) -> torch.Tensor:
    """Next token per row: argmax at temperature 0, else inverse-CDF sampling of softmax(logits / T).

    `u` [rows] are the rows' uniforms. The CDF runs over token ids in vocabulary order, so a
    row's choice depends only on its own logits and its own `u`, and a float-rounding change
    of the logits (another batch shape) moves the CDF by as little, never reorders it (a CDF
    over probability-sorted tokens would be reordered by near-ties). Top-p keeps the tokens at
    least as likely as the last one of the smallest sorted prefix whose mass reaches p.
    """
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p = probs.sort(dim=-1, descending=True).values
        before = sorted_p.cumsum(-1) - sorted_p  # mass of the strictly more likely tokens
        kept = (before < top_p).sum(-1, keepdim=True)  # >= 1
        threshold = sorted_p.gather(1, kept - 1)
        probs = probs.masked_fill(probs < threshold, 0.0)
    cdf = probs.cumsum(-1)
    x = (u.to(cdf.device, cdf.dtype) * cdf[:, -1]).unsqueeze(1)
    idx = torch.searchsorted(cdf, x, right=True).clamp_(max=cdf.shape[1] - 1)
    # Rounding can push x onto the CDF's flat tail (p = 0 tokens): fall back to the mode there.
    ok = probs.gather(1, idx) > 0
    if bool(ok.all()):  # the usual case: no row needs the mode, so it is not computed
        return idx.squeeze(1)
    return torch.where(ok, idx, probs.argmax(-1, keepdim=True)).squeeze(1)


# ---------------------------------------------------------------- tokenizer helpers


@functools.cache
def _decodes_plainly(cls: type) -> bool:
    """Does this tokenizer class decode exactly as transformers' fast tokenizer does (no override)?"""
    from transformers import PreTrainedTokenizerFast

    return (issubclass(cls, PreTrainedTokenizerFast) and cls.decode is PreTrainedTokenizerFast.decode
            and cls._decode is PreTrainedTokenizerFast._decode)


def decode(tokenizer: Any, ids: Sequence[int]) -> str:
    """The text of `ids`, special tokens kept, no clean-up. A fast tokenizer that does not override decoding
    has its Rust decoder called directly: `tokenizer.decode` returns the same text but first converts the ids
    element by element, which cost more than the decoding itself in the sampler's calculator check (twice
    per `=` token)."""
    if _decodes_plainly(type(tokenizer)):
        return tokenizer.backend_tokenizer.decode(list(ids), skip_special_tokens=False)
    return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def encode_fragment(tokenizer: Any, text: str) -> list[int]:
    """Token ids that decode to exactly `text` when appended mid-sequence.

    Plain encode is right for byte-level BPEs. SentencePiece-style tokenizers add a prefix
    space to a fragment; there we encode "a"+text and drop the tokens of "a".
    """
    ids = tokenizer.encode(text, add_special_tokens=False)
    if decode(tokenizer, ids) == text:
        return ids
    anchor = tokenizer.encode("a", add_special_tokens=False)
    both = tokenizer.encode("a" + text, add_special_tokens=False)
    if both[: len(anchor)] == anchor and decode(tokenizer, both[len(anchor):]) == text:
        return both[len(anchor):]
    return ids


def eos_ids(tokenizer: Any, model: Any = None) -> set[int]:
    """EOS ids of the tokenizer and of the model's generation config (Llama-3 style lists)."""
    out = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None) if gen is not None else None
    if isinstance(extra, int):
        out.add(extra)
    elif isinstance(extra, list | tuple):
        out.update(int(e) for e in extra)
    return out


# ---------------------------------------------------------------- calculator


@dataclass(frozen=True)
class Forcing:
    """What the calculator writes after a row's last token.

    replace_last: the last token (which merged `=` with text that contradicts the result,
    e.g. GPT-2's "=3" when the result is 25) is dropped and `ids` written in its place.
    """

    ids: list[int]
    replace_last: bool = False


class Calculator:
    """Per-tokenizer calculator logic, called only for rows whose new token contains `=`.

    Cheap per step: a precomputed table says which token ids contain `=`, and only then the
    last `window` tokens are decoded (annotation expressions are far shorter; an expression
    longer than the window is not computed and the model writes the result itself).
    """

    def __init__(self, tokenizer: Any, vocab_size: int | None = None, window: int = 48):
        self.tokenizer = tokenizer
        self.window = window
        n = max(len(tokenizer), vocab_size or 0)
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        has_eq = np.zeros(n, dtype=bool)
        for i, p in enumerate(pieces):
            # Byte-fallback pieces (`<0x3D>`) hide the character: decode those to be sure.
            if p is not None and ("=" in p or p.startswith("<0x")) and "=" in decode(tokenizer, [i]):
                has_eq[i] = True
        self.has_eq = has_eq.tolist()
        self._cache: dict[str, list[int]] = {}

    def _encode(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            ids = self._cache[text] = encode_fragment(self.tokenizer, text)
        return ids

    def check(self, tokens: Sequence[int]) -> Forcing | None:
        """The forcing to apply after `tokens` (the row's generated tokens, last one just chosen), or None.

        None when the last token does not close an open `<<expr=`, or when `expr` does not
        evaluate (the failure path: the model continues on its own).
        """
        last = tokens[-1]
        if last >= len(self.has_eq) or not self.has_eq[last]:
            return None
        window = list(tokens[-self.window:])
        head = decode(self.tokenizer, window[:-1])
        full = decode(self.tokenizer, window)
        if not full.startswith(head):
            return None
        piece = full[len(head):]  # the last token's text
        for j, ch in enumerate(piece):
            if ch != "=":
                continue
            opened = open_annotation(head + piece[: j + 1])
            if opened is None or opened[1] != "":
                continue
            result = evaluate(opened[0])
            if result is None:
                return None
            target = result + ANNOTATION_CLOSE
            extra = piece[j + 1:]  # text the token carried past `=` (BPE merges like "=2")
            if target.startswith(extra):
                rest = target[len(extra):]
                return Forcing(self._encode(rest) if rest else [])
            return Forcing(self._encode(piece[: j + 1] + target), replace_last=True)
        return None


def newline_table(tokenizer: Any, vocab_size: int | None = None) -> list[bool]:
    """Per token id: does its text contain a newline (what ends a solution step)."""
    n = max(len(tokenizer), vocab_size or 0)
    out = [False] * n
    for i in range(len(tokenizer)):
        out[i] = "\n" in decode(tokenizer, [i])
    return out


def make_sample(request: Request, tokens: list[int], forced: list[bool], calc_calls: int, finished: bool,
                tokenizer: Any) -> Sample:
    text = decode(tokenizer, tokens)
    answer = extract_answer(text)
    correct = None if request.reference is None else is_correct(text, request.reference)
    return Sample(problem_id=request.problem_id, sample_idx=request.sample_idx, text=text, tokens=tokens,
                  final_answer=answer, is_correct=correct, calc_calls=calc_calls, forced=forced, finished=finished)
