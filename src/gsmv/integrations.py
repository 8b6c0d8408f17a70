"""A trained verifier as a reward for other tools: TRL's reward-function form.

    from gsmv.integrations import trl_reward
    reward = trl_reward("runs/synth")            # a run folder, its verifier/final, or a `gsmv export` folder
    GRPOTrainer(..., reward_funcs=reward)         # prompts: gsmv.data.gsm8k.format_prompt(question)

reward(prompts, completions, **kwargs) -> list[float]: P(correct) of each completion, read exactly as gsmv
scores a sample: the prompt encoded with the tokenizer's special tokens, the completion without them, and EOS
after a finished completion. A completion is finished when kwargs["finished"][i] says so, else when it has
reached its final-answer line (`#### ` followed by an answer): the generator ends there with EOS.
Completions may be strings or TRL's conversational form ([{"role": "assistant", "content": ...}]).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from gsmv.errors import GsmvError

_ANSWER_LINE = re.compile(r"(^|\n)#### \S")


def _text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    raise GsmvError(f"reward: a completion must be a string or a list of messages, got {type(completion).__name__}")


def trl_reward(path: str | Path, *, batch_size: int = 32, device: str = "cpu") -> Callable[..., list[float]]:
    """The reward callable of a verifier (see the module docstring)."""
    from gsmv.models.tokenizer import encode_prompt

    path = Path(path)
    if (path / "verifier" / "final").is_dir():
        path = path / "verifier" / "final"
    exported = (path / "config.json").is_file() and not (path / "verifier_config.json").is_file()
    if exported:
        from gsmv.export import load_exported

        model, tok = load_exported(path)
        model.to(device)
    else:
        from gsmv.models.verifier import input_limit, load_verifier, pad_id_of, score_sequences

        model, tok = load_verifier(path, device=device)
        limit, pad = input_limit(model.lm, 1 << 30), pad_id_of(tok)

    def values(seqs: list[list[int]], starts: list[int]) -> list[float]:
        if not exported:
            return [v for v, _ in score_sequences(model, seqs, starts, batch_size=batch_size, pad_id=pad,
                                                  max_len=limit)]
        out = []
        for i in range(0, len(seqs), batch_size):
            chunk = seqs[i:i + batch_size]
            width = max(len(s) for s in chunk)
            pad_id = model.config.pad_token_id
            ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in chunk], device=device)
            mask = (torch.arange(width, device=device)[None] < torch.tensor([len(s) for s in chunk], device=device)[:, None])
            with torch.no_grad():
                logits = model(input_ids=ids, attention_mask=mask.long()).logits.float()
            if logits.dim() == 3:  # token classification: the value after the last real token
                logits = logits[torch.arange(len(chunk)), torch.tensor([len(s) - 1 for s in chunk]), 0]
            else:
                logits = logits[:, 0] + float(getattr(model.config, "value_bias", 0.0))
            out += torch.sigmoid(logits).tolist()
        return out

    def reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        if len(prompts) != len(completions):
            raise GsmvError(f"reward: {len(prompts)} prompts for {len(completions)} completions")
        finished = kwargs.get("finished")
        seqs, starts = [], []
        for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            text = _text(c)
            ids = encode_prompt(tok, _text(p))
            sol = tok(text, add_special_tokens=False)["input_ids"]
            done = bool(finished[i]) if finished is not None else bool(_ANSWER_LINE.search(text))
            seqs.append(ids + sol + ([tok.eos_token_id] if done and tok.eos_token_id is not None else []))
            starts.append(len(ids))
        return values(seqs, starts)

    reward.__name__ = "gsmv_verifier"  # TRL logs each reward function by its name
    return reward
