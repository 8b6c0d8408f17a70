"""`gsmv export`: a trained verifier as a standard transformers classifier folder (no remote code).

The token head's value is sigmoid(gain · ⟨h, W_out[v]⟩ + bias) = sigmoid(⟨h, gain · W_out[v]⟩ + bias): a linear
head on the last hidden state h with weight gain · W_out[v] and bias `bias`; the linear head already is one.
So the export is exact:

- token-cls: AutoModelForTokenClassification (num_labels=1): its `score` layer has a bias and holds the head
  whole; sigmoid(logits[..., 0]) is the value after every token, as gsmv's per-token values.
- seq-cls: AutoModelForSequenceClassification (num_labels=1): its `score` layer has no bias (Llama, Qwen2,
  GPT-2 ...), so the logit it returns is the value's logit less the bias, which ranks samples exactly;
  P(correct) = sigmoid(logit + config.value_bias). It reads the last token that is not config.pad_token_id,
  so the export sets pad_token_id to a token that never occurs in input (the reserved value token; for a
  linear head the tokenizer's pad token, when it is not EOS): the score is then read at a finished solution's
  EOS, where gsmv scores it.

Input format, as gsmv scores: format_prompt(question) encoded with the tokenizer's special tokens, then the
solution without special tokens, then EOS when the solution is finished (gsmv.models.verifier.prompt_ids,
solution_ids). gsmv reads at most verifier.max_len tokens, cut from the left; the export reads what it is given.
The folder's README.md (gsmv.model_card) says so for users of the folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from gsmv.errors import GsmvError

TARGETS = {"seq-cls": "AutoModelForSequenceClassification", "token-cls": "AutoModelForTokenClassification"}


def head_as_linear(ver: Any) -> tuple[torch.Tensor, float]:
    """(weight (hidden,), bias) of the linear function of the last hidden state whose sigmoid is the value."""
    if ver.head == "linear":
        return ver.linear.weight.detach().float().reshape(-1).clone(), float(ver.linear.bias.detach().reshape(()))
    row = ver.lm.get_output_embeddings().weight[ver.value_token_id].detach().float()
    bias = float(ver.bias.detach())
    out_bias = getattr(ver.lm.get_output_embeddings(), "bias", None)
    if out_bias is not None:  # an unembedding with a bias: gain · b_v joins the head's bias
        bias += float(ver.gain.detach()) * float(out_bias[ver.value_token_id].detach())
    return float(ver.gain.detach()) * row, bias


def _safe_pad_id(ver: Any, tok: Any) -> int:
    """A pad id that no scored input holds (see the module docstring)."""
    if ver.head == "token":
        return int(ver.value_token_id)
    if tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id:
        return int(tok.pad_token_id)
    raise GsmvError("export: the tokenizer's pad token is its EOS, so a sequence-classification model would read "
                    "the score one token early; export with --to token-cls, or use a tokenizer with a pad token")


def export(verifier_dir: str | Path, to: str, out: str | Path, card: dict | None = None) -> Path:
    """Write the classifier folder for the verifier at verifier_dir (a run's verifier/final); returns `out`."""
    import transformers

    from gsmv.models.verifier import load_verifier

    if to not in TARGETS:
        raise GsmvError(f"export: --to '{to}': valid targets are {', '.join(TARGETS)}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise GsmvError(f"{out}: exists and is not empty (choose another --out)")
    ver, tok = load_verifier(verifier_dir, dtype=torch.float32, device="cpu")
    weight, bias = head_as_linear(ver)
    config = ver.lm.config.__class__.from_dict(ver.lm.config.to_dict())
    config.num_labels = 1
    config.architectures = None
    pad = _safe_pad_id(ver, tok) if to == "seq-cls" else (tok.pad_token_id if tok.pad_token_id is not None
                                                           else tok.eos_token_id)
    config.pad_token_id = pad
    config.gsmv = {"kind": "verifier", "head": ver.head, "target": to, "source": str(verifier_dir)}
    model = getattr(transformers, TARGETS[to]).from_config(config)
    missing, unexpected = model.base_model.load_state_dict(ver.lm.base_model.state_dict(), strict=False)
    if missing or unexpected:
        raise GsmvError(f"export: {verifier_dir}: the trunk does not fit {TARGETS[to]} "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    # Llama-style classes call the layer `score`; GPT-2's token classifier calls it `classifier`.
    layer = model.score if hasattr(model, "score") else model.classifier
    with torch.no_grad():
        layer.weight.copy_(weight.reshape(1, -1).to(layer.weight.dtype))
        if layer.bias is not None:
            layer.bias.fill_(bias)
    # What a reader adds to the logit for P(correct): the bias, unless the score layer already holds it.
    model.config.value_bias = 0.0 if layer.bias is not None else bias
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    if to == "seq-cls":
        tok.pad_token = tok.convert_ids_to_tokens(pad)
    tok.save_pretrained(out)
    from gsmv.model_card import write_card

    write_card(out, kind="verifier-export", base=str(verifier_dir), extra=(card or {}) | {"target": to})
    return out


def load_exported(path: str | Path) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer) of an exported folder, with transformers' Auto classes alone."""
    import transformers

    meta = json.loads((Path(path) / "config.json").read_text()).get("gsmv", {})
    cls = getattr(transformers, TARGETS.get(meta.get("target"), "AutoModelForSequenceClassification"))
    model = cls.from_pretrained(path)
    return model.eval(), transformers.AutoTokenizer.from_pretrained(path)
