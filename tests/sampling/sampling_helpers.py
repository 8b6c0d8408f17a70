"""Sampler test helpers: a scripted causal LM, a fake vLLM engine, tiny models with lively logits, the test
questions as requests and HF `generate`'s greedy samples (the reference the fast engine must equal)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from gsmv.data.gsm8k import format_prompt
from gsmv.sampling.base import Request, request_seed

Policy = Callable[[list[int], list[int]], int]  # (prompt ids, generated ids) -> next token


class ScriptedLM(nn.Module):
    """A causal LM whose next token is policy(prompt, generated), for any batch layout.

    It stores each input token id as its 'key' in the DynamicCache, so at every step it can
    read back a row's whole sequence (valid positions from the attention mask) and ask the
    policy; the logits are one-hot (30 vs 0), so sampling at T <= 1 picks the policy's token.
    prompt_len(seq) tells where the prompt ends (prompts are recognised by a marker token).
    """

    def __init__(self, vocab: int, policy: Policy, prompt_end: int):
        super().__init__()
        self.vocab = vocab
        self.policy = policy
        self.prompt_end = prompt_end  # the prompt's last token (e.g. the newline of format_prompt)
        self.dummy = nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(model_type="scripted")
        self.calls = 0

    def get_output_embeddings(self) -> None:
        return None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, cache: Any = None, use_cache: bool = True, **kw: Any):
        self.calls += 1
        b, t = input_ids.shape
        k = input_ids.to(torch.float32).view(b, 1, t, 1)
        keys, _ = cache.update(k, k.clone(), 0)
        total = keys.shape[2]
        mask = attention_mask if attention_mask is not None else torch.ones(b, total, dtype=torch.long)
        logits = torch.zeros(b, t, self.vocab)
        for i in range(b):
            seq = keys[i, 0, mask[i].bool(), 0].long().tolist()
            if self.prompt_end not in seq:
                continue  # prefill of a prompt prefix: logits unused
            cut = seq.index(self.prompt_end) + 1
            logits[i, -1, self.policy(seq[:cut], seq[cut:])] = 30.0
        return SimpleNamespace(logits=logits)


def script_policy(scripts: dict[tuple[int, ...], list[int]], eos: int) -> Policy:
    """Position-based policy: the k-th generated token is script[k] (EOS after the script)."""

    def policy(prompt: list[int], generated: list[int]) -> int:
        s = scripts[tuple(prompt)]
        return s[len(generated)] if len(generated) < len(s) else eos

    return policy


def lively(model: nn.Module, std: float = 0.15, seed: int = 1) -> nn.Module:
    """Re-draw the weight matrices with a larger scale: a random model at HF's init (std 0.02)
    has nearly uniform logits and greedy decoding repeats one token, which tests nothing."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


# ---------------------------------------------------------------- requests and HF's greedy reference


QUESTIONS = [
    "Raj has 5 boxes with 3 coins in each. How many coins are there?",
    "Sam has 13 coins, buys 20 more and then gives away 3. How many coins are left?",
    "Lee has 6 books.",
    "Ana has 15 books, buys 12 more and then gives away 3. How many books are left?",
    "Two?",
    "Lee has 4 boxes with 5 books in each. How many books are there?",
    "Max has 7 pens and buys 8 more. How many pens does he have now?",
]


def requests(tok, n_problems: int = 5, n: int = 1, base_seed: int = 0) -> list[Request]:
    out = []
    for i, q in enumerate(QUESTIONS[:n_problems]):
        ids = tuple(tok.encode(format_prompt(q), add_special_tokens=False))
        out += [Request(f"p{i}", j, ids, request_seed(base_seed, f"p{i}", j), reference="15") for j in range(n)]
    return out


def by_key(samples) -> dict:
    return {(s.problem_id, s.sample_idx): s for s in samples}


def hf_greedy(model, tok, reqs, max_new_tokens: int) -> dict:
    out = {}
    for r in reqs:
        g = model.generate(torch.tensor([r.prompt_ids]), max_new_tokens=max_new_tokens, do_sample=False,
                           eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
        toks = g[0, len(r.prompt_ids):].tolist()
        out[(r.problem_id, r.sample_idx)] = toks[: toks.index(tok.eos_token_id)] if tok.eos_token_id in toks else toks
    return out


# ---------------------------------------------------------------- fake vLLM


@dataclass
class FakeParams:
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 16
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    skip_special_tokens: bool = True


class FakeLLM:
    """vLLM's offline `LLM.generate` semantics on a policy: stop strings are matched on the new
    text and end the output at the token that completes them (token_ids keep that whole token);
    EOS is kept in token_ids with finish_reason "stop" and stop_reason None; "length" at max_tokens."""

    def __init__(self, tokenizer: Any, policy: Policy, prompt_end: int):
        self.tok = tokenizer
        self.policy = policy
        self.prompt_end = prompt_end
        self.calls: list[tuple[list[list[int]], list[FakeParams]]] = []

    def generate(self, prompts: list[dict], sampling_params: list[FakeParams], use_tqdm: bool = False) -> list:
        self.calls.append(([list(p["prompt_token_ids"]) for p in prompts], list(sampling_params)))
        outs = []
        for p, sp in zip(prompts, sampling_params, strict=True):
            seq = list(p["prompt_token_ids"])
            cut = seq.index(self.prompt_end) + 1
            new: list[int] = []
            finish, reason = "length", None
            while len(new) < sp.max_tokens:
                t = self.policy(seq[:cut], seq[cut:] + new)
                new.append(t)
                if t == self.tok.eos_token_id and not sp.ignore_eos:
                    finish = "stop"
                    break
                text = self.tok.decode(new)
                hit = next((s for s in sp.stop if s in text), None)
                if hit is not None:
                    finish, reason = "stop", hit
                    break
            outs.append(SimpleNamespace(outputs=[SimpleNamespace(token_ids=new, text=self.tok.decode(new),
                                                                 finish_reason=finish, stop_reason=reason)]))
        return outs
