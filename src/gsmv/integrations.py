"""A trained verifier as a reward for other tools (TRL's reward-function form) and as a transformers pipeline.

    from gsmv.integrations import trl_reward
    reward = trl_reward("runs/synth")            # a run folder, its verifier/final, or a `gsmv export` folder
    GRPOTrainer(..., reward_funcs=reward)         # prompts: gsmv.data.gsm8k.format_prompt(question)

reward(prompts, completions, **kwargs) -> list[float]: P(correct) of each completion, read exactly as `gsmv score`
reads a sample: the prompt encoded with the tokenizer's special tokens, the completion without them, EOS after a
finished completion, and at most the last verifier.max_len tokens of that (the run's setting; an export records
it). Completions may be strings or TRL's conversational form ([{"role": "assistant", "content": ...}]).

Which ids and whether finished, as the sampler decides (gsmv.sampling.base.Sample: `finished` = it stopped at EOS):
- kwargs["finished"][i], when given, says whether completion i finished;
- else kwargs["completion_ids"][i] (TRL passes the policy's ids, EOS included when it was sampled): when they
  decode, EOS left out, to the completion's text with this verifier's tokenizer (the policy shares its
  vocabulary), they are read as they are (no re-encoding) and the completion is finished when they hold EOS;
- else (text alone) the completion is finished when it has reached its final-answer line (`#### ` and an
  answer). That guess disagreed with the sampler's flag on 45 of 320 samples of a readable run (112 of 320 on a
  smoke run), and re-encoding a text changed the ids of 3 of 320 (216 of 320): pass completion_ids or finished
  for gsmv's numbers.

verifier_pipeline(folder) is transformers' text-classification pipeline on a `seq-cls` export that returns
P(correct) with gsmv's input limit applied, also where the score layer cannot hold the head's bias (gsmv.export).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gsmv.errors import GsmvError

_ANSWER_LINE = re.compile(r"(^|\n)#### \S")


def _text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    raise GsmvError(f"reward: a completion must be a string or a list of messages, got {type(completion).__name__}")


def solution_ids(tok: Any, text: str, *, finished: bool | None = None,
                 completion_ids: Sequence[int] | None = None) -> tuple[list[int], bool]:
    """(ids read after the prompt, EOS included when finished; finished) of one completion (module docstring)."""
    eos = tok.eos_token_id
    if completion_ids is not None:
        ids = [int(t) for t in completion_ids]
        body = ids[:ids.index(eos)] if eos in ids else ids
        if tok.decode(body) == text:  # the policy's ids are this tokenizer's: read them, not a re-encoding
            done = eos in ids if finished is None else bool(finished)
            return body + ([eos] if done else []), done
    done = bool(_ANSWER_LINE.search(text)) if finished is None else bool(finished)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return list(ids) + ([eos] if done and eos is not None else []), done


def _verifier_folder(path: Path) -> Path:
    return path / "verifier" / "final" if (path / "verifier" / "final").is_dir() else path


def trl_reward(path: str | Path, *, batch_size: int = 32, device: str = "cpu",
               max_len: int | None = None) -> Callable[..., list[float]]:
    """The reward callable of a verifier (see the module docstring). max_len: the input limit of a verifier folder
    outside a run (default: its run's verifier.max_len; an export's recorded limit always applies)."""
    from gsmv.models.tokenizer import encode_prompt

    path = _verifier_folder(Path(path))
    exported = (path / "config.json").is_file() and not (path / "verifier_config.json").is_file()
    if exported:
        from gsmv.export import exported_values, input_limit_of, load_exported

        model, tok = load_exported(path)
        model.to(device)
        input_limit_of(model)  # refuse an export without a recorded limit now, not at the first batch

        def values(seqs: list[list[int]], starts: list[int]) -> list[float]:
            return exported_values(model, seqs, batch_size=batch_size)
    else:
        from gsmv.export import verifier_input_limit
        from gsmv.models.verifier import load_verifier, pad_id_of, score_sequences

        model, tok = load_verifier(path, device=device)
        limit, pad = verifier_input_limit(path, model.lm, max_len), pad_id_of(tok)

        def values(seqs: list[list[int]], starts: list[int]) -> list[float]:
            return [v for v, _ in score_sequences(model, seqs, starts, batch_size=batch_size, pad_id=pad,
                                                  max_len=limit)]

    def reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        if len(prompts) != len(completions):
            raise GsmvError(f"reward: {len(prompts)} prompts for {len(completions)} completions")
        finished, given_ids = kwargs.get("finished"), kwargs.get("completion_ids")
        seqs, starts = [], []
        for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            ids = encode_prompt(tok, _text(p))
            sol, _ = solution_ids(tok, _text(c), finished=None if finished is None else finished[i],
                                  completion_ids=None if given_ids is None else given_ids[i])
            seqs.append(ids + sol)
            starts.append(len(ids))
        return values(seqs, starts)

    reward.__name__ = "gsmv_verifier"  # TRL logs each reward function by its name
    return reward


def verifier_pipeline(path: str | Path, **kwargs: Any) -> Any:
    """transformers' text-classification pipeline on a `seq-cls` export, returning [{"label": "correct", "score":
    P(correct)}] per input text (format_prompt(question) + solution [+ EOS token]) exactly as `gsmv score`: the
    input cut to its last config.gsmv["max_len"] ids and config.value_bias added before the sigmoid. kwargs go to
    transformers.pipeline (device, batch_size ...)."""
    from transformers import pipeline

    return pipeline("text-classification", model=str(path), pipeline_class=_pipeline_class(), **kwargs)


def _pipeline_class() -> type:
    """The TextClassificationPipeline subclass behind verifier_pipeline (made here: transformers loads lazily)."""
    import torch
    from transformers import TextClassificationPipeline

    from gsmv.export import input_limit_of, p_correct, truncate_like_score

    class VerifierPipeline(TextClassificationPipeline):
        def preprocess(self, inputs: Any, **tokenizer_kwargs: Any) -> dict:
            # The tokenizer's own truncation keeps a BOS it adds; gsmv score cuts the whole id sequence.
            ids = self.tokenizer(inputs, **tokenizer_kwargs)["input_ids"]
            ids = truncate_like_score(ids, input_limit_of(self.model))
            return {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}

        def postprocess(self, model_outputs: Any, **_: Any) -> dict:
            return {"label": "correct", "score": float(p_correct(self.model, model_outputs["logits"])[0])}

    return VerifierPipeline
