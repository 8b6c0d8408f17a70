"""`gsmv export`: a trained verifier as a standard transformers classifier folder (no remote code).

The token head's value is sigmoid(gain · ⟨h, W_out[v]⟩ + bias) = sigmoid(⟨h, gain · W_out[v]⟩ + bias): a linear
head on the last hidden state h with weight gain · W_out[v] and bias `bias`; the linear head already is one.
So the export is exact:

- token-cls: AutoModelForTokenClassification with two labels, "incorrect" (a zero row) and "correct" (the head,
  bias included): softmax(logits)[..., 1] = sigmoid(value logit) is the value after every token, as gsmv's
  per-token values. Two labels because transformers' token-classification pipeline always applies a softmax
  (over one label it is 1.0 everywhere); over [0, z] it is sigmoid(z), so the pipeline reports values.
- seq-cls: AutoModelForSequenceClassification (one label). Its score layer has no bias (Llama, Qwen2, GPT-2 ...).
  Where the trunk's final norm has a bias feeding only the score layer (GPT-2's ln_f) the head's bias is folded
  into it: sigmoid(logit) is P(correct) and `pipeline("text-classification")` returns it (problem_type
  multi_label_classification, label "correct"). An RMSNorm trunk (Llama, Qwen2, SmolLM2) has no constant
  component after its final norm, so no weight can hold the bias: config.value_bias keeps it,
  P(correct) = sigmoid(logit + value_bias), and the config says problem_type "regression" with label "logit", so
  the plain pipeline shows the logit rather than a probability that is not P(correct);
  gsmv.integrations.verifier_pipeline gives P(correct). The class reads the last token that is not
  config.pad_token_id, so the export sets pad_token_id to a token that never occurs in input (the reserved value
  token; for a linear head the tokenizer's pad token, or an added `<|gsmv_pad|>` when that pad is EOS): the
  score is then read at a finished solution's EOS, where gsmv scores it.

Input format, as gsmv scores: format_prompt(question) encoded with the tokenizer's special tokens, then the
solution without special tokens, then EOS when the solution is finished (gsmv.models.verifier.prompt_ids,
solution_ids). gsmv reads at most the last verifier.max_len tokens (capped by the LM's positions): the export
records that limit as config.gsmv["max_len"] and as the tokenizer's model_max_length with left truncation, and
`exported_values` (what gsmv.integrations.trl_reward uses on an export) cuts the same way. The folder's
README.md (gsmv.model_card) says so for users of the folder.

The folder is written beside `out` under a temporary name and renamed when complete (a killed export leaves no
half folder under `out`; the next export deletes a dead one's leftover).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from gsmv.errors import GsmvError

TARGETS = {"seq-cls": "AutoModelForSequenceClassification", "token-cls": "AutoModelForTokenClassification"}
PAD_TOKEN = "<|gsmv_pad|>"  # added only when the tokenizer's pad is EOS (see _seq_cls_pad)
TOKEN_LABELS = {0: "incorrect", 1: "correct"}
_NORM_NAMES = ("ln_f", "norm", "final_layernorm", "final_layer_norm")  # the trunk's final norm, by family


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


def run_max_len(verifier_dir: str | Path) -> int | None:
    """verifier.max_len of the run a verifier folder (RUN/verifier/NAME) belongs to; None outside a run."""
    folder = Path(verifier_dir)
    cfg_path = folder.parent.parent / "config.yaml"
    if folder.parent.name != "verifier" or not cfg_path.is_file():
        return None
    from gsmv.config import load_config

    return load_config(cfg_path).verifier.max_len


def verifier_input_limit(verifier_dir: str | Path, lm: Any, max_len: int | None = None) -> int | None:
    """The longest input gsmv scores with this verifier: `max_len`, else its run's verifier.max_len, capped by the
    LM's positions (gsmv.models.verifier.input_limit, as the score stage cuts); outside a run, the LM's positions
    (None: no limit known)."""
    from gsmv.models.verifier import input_limit, max_positions

    max_len = max_len if max_len is not None else run_max_len(verifier_dir)
    return input_limit(lm, max_len) if max_len is not None else max_positions(lm)


def _seq_cls_pad(ver: Any, tok: Any, model: Any) -> int:
    """A pad id that no scored input holds (see the module docstring); may add PAD_TOKEN to tok and model."""
    if ver.head == "token":
        return int(ver.value_token_id)
    if tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id:
        return int(tok.pad_token_id)
    # Pad is EOS (SmolLM2): the class would read a finished solution one token early. A new token never occurs
    # in text; its embedding row is only ever read at pad positions, which no real position attends to.
    tok.add_special_tokens({"pad_token": PAD_TOKEN})
    emb = model.get_input_embeddings()
    if tok.pad_token_id >= emb.weight.shape[0]:
        model.resize_token_embeddings(tok.pad_token_id + 1, mean_resizing=False)
        with torch.no_grad():
            model.get_input_embeddings().weight[tok.pad_token_id:].zero_()
    return int(tok.pad_token_id)


def _final_norm_bias(model: Any) -> torch.Tensor | None:
    """The bias of the trunk's final norm (GPT-2's ln_f), or None (RMSNorm trunks have none)."""
    for name in _NORM_NAMES:
        norm = getattr(model.base_model, name, None)
        if norm is not None:
            bias = getattr(norm, "bias", None)
            return bias if isinstance(bias, torch.Tensor) else None
    return None


@torch.no_grad()
def _write_head(model: Any, to: str, weight: torch.Tensor, bias: float) -> float:
    """Put the head into the class's score layer; returns what a reader still adds to the logit (value_bias)."""
    # Llama-style classes call the layer `score`; GPT-2's token classifier calls it `classifier`.
    layer = model.score if hasattr(model, "score") else model.classifier
    w = weight.to(layer.weight.dtype)
    if to == "token-cls":  # row 0 stays zero: softmax over [0, z] is sigmoid(z)
        layer.weight.zero_()
        layer.weight[1].copy_(w)
        layer.bias.zero_()
        layer.bias[1] = bias
        return 0.0
    layer.weight.copy_(w.reshape(1, -1))
    if layer.bias is not None:
        layer.bias.fill_(bias)
        return 0.0
    norm_bias = _final_norm_bias(model)
    if norm_bias is not None and float(w @ w) > 0:
        # The final norm's output feeds only the score layer: w · (β + b·w/|w|²) = w · β + b.
        norm_bias.add_((bias * w / (w @ w)).to(norm_bias.dtype))
        return 0.0
    return bias


def _label_config(config: Any, to: str, value_bias: float) -> None:
    """Labels and problem type, so that transformers' pipelines apply the right function (module docstring)."""
    if to == "token-cls":
        config.id2label, config.problem_type = dict(TOKEN_LABELS), "single_label_classification"
    elif value_bias == 0.0:
        config.id2label, config.problem_type = {0: "correct"}, "multi_label_classification"
    else:
        config.id2label, config.problem_type = {0: "logit"}, "regression"
    config.label2id = {v: k for k, v in config.id2label.items()}


def _leftovers(out: Path) -> Iterator[Path]:
    """Temporary folders of earlier exports to `out` whose process is gone (killed mid-write)."""
    for p in out.parent.glob(f".{out.name}.export-*.tmp"):
        try:
            os.kill(int(p.name.rsplit("-", 1)[1][:-len(".tmp")]), 0)
        except (ValueError, ProcessLookupError):
            yield p
        except PermissionError:  # another user's live process
            continue


@contextmanager
def _atomic_out(out: Path) -> Iterator[Path]:
    """A temporary folder beside `out`, renamed to `out` when the block finishes (gsmv.artifacts.replace_dir).
    The name carries the pid, so a later export removes a killed one's leftover but never a live one's."""
    from gsmv.artifacts import replace_dir

    out.parent.mkdir(parents=True, exist_ok=True)
    for p in _leftovers(out):
        shutil.rmtree(p, ignore_errors=True)
    tmp = out.parent / f".{out.name}.export-{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _quiet_bars(quiet: bool) -> Iterator[None]:
    """transformers' and huggingface_hub's own progress bars ("Loading weights") off for the block, then as
    before: an export is a few seconds of loading and saving, and its one output line says what it wrote."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as hf_logging

    was_hf, was_hub = hf_logging.is_progress_bar_enabled(), not are_progress_bars_disabled()
    if quiet:
        hf_logging.disable_progress_bar()
        disable_progress_bars()
    try:
        yield
    finally:
        if quiet and was_hf:
            hf_logging.enable_progress_bar()
        if quiet and was_hub:
            enable_progress_bars()


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "an export already" if (out / "config.json").is_file() else "other files"
        raise GsmvError(f"{out}: exists and is not empty (it holds {what}; gsmv export writes only a new or empty "
                        "folder, so two exports never mix: delete it or choose another --out)")


def export(verifier_dir: str | Path, to: str, out: str | Path, card: dict | None = None, *,
           max_len: int | None = None, progress: bool = False) -> Path:
    """Write the classifier folder for the verifier at verifier_dir (a run's verifier/final); returns `out`.

    max_len: the input limit to record (default: the run's verifier.max_len, as `gsmv score` cuts);
    progress: show the libraries' loading bars."""
    if to not in TARGETS:
        raise GsmvError(f"export: --to '{to}': valid targets are {', '.join(TARGETS)}")
    out = Path(out)
    _check_out(out)
    with _quiet_bars(not progress):
        model, tok, limit = _build(verifier_dir, to, max_len)
        with _atomic_out(out) as tmp:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            from gsmv.model_card import write_card

            extra = (card or {}) | {"target": to, "input limit (tokens, kept from the end)": limit}
            write_card(tmp, kind="verifier-export", base=str(verifier_dir), extra=extra)
    return out


def _build(verifier_dir: str | Path, to: str, max_len: int | None) -> tuple[Any, Any, int | None]:
    """(classifier model, tokenizer, input limit) of the export, in memory."""
    import transformers

    from gsmv.models.verifier import load_verifier

    ver, tok = load_verifier(verifier_dir, dtype=torch.float32, device="cpu")
    limit = verifier_input_limit(verifier_dir, ver.lm, max_len)
    weight, bias = head_as_linear(ver)
    config = ver.lm.config.__class__.from_dict(ver.lm.config.to_dict())
    config.num_labels = 2 if to == "token-cls" else 1
    config.architectures = None
    model = getattr(transformers, TARGETS[to]).from_config(config)
    missing, unexpected = model.base_model.load_state_dict(ver.lm.base_model.state_dict(), strict=False)
    if missing or unexpected:
        raise GsmvError(f"export: {verifier_dir}: the trunk does not fit {TARGETS[to]} "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    value_bias = _write_head(model, to, weight, bias)
    if to == "seq-cls":
        model.config.pad_token_id = _seq_cls_pad(ver, tok, model)
        tok.pad_token = tok.convert_ids_to_tokens(model.config.pad_token_id)
    else:  # token-cls reads every position: padding only has to be masked
        model.config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    _label_config(model.config, to, value_bias)
    model.config.value_bias = value_bias
    model.config.gsmv = {"kind": "verifier", "head": ver.head, "target": to, "source": str(verifier_dir),
                         "max_len": limit}
    # The tokenizer cuts like `gsmv score` (keep the last `limit` tokens) when asked to truncate, and pads on the
    # right (left padding would shift Llama's positions).
    tok.truncation_side, tok.padding_side = "left", "right"
    tok.init_kwargs["truncation_side"] = "left"  # save_pretrained keeps only init kwargs, and this is one
    if limit is not None:
        tok.model_max_length = limit
    return model.eval(), tok, limit


def load_exported(path: str | Path) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer) of an exported folder, with transformers' Auto classes alone."""
    import transformers

    meta = json.loads((Path(path) / "config.json").read_text()).get("gsmv", {})
    cls = getattr(transformers, TARGETS.get(meta.get("target"), "AutoModelForSequenceClassification"))
    model = cls.from_pretrained(path)
    return model.eval(), transformers.AutoTokenizer.from_pretrained(path)


def input_limit_of(model: Any) -> int | None:
    """The input limit an export records (config.gsmv["max_len"]); an export written before it was recorded
    cannot be read as gsmv scores past that limit, so it is refused."""
    meta = getattr(model.config, "gsmv", None) or {}
    if "max_len" not in meta:
        raise GsmvError(f"{getattr(model.config, '_name_or_path', 'export')}: the export records no input limit "
                        "(written by an older gsmv): export it again")
    return meta["max_len"]


def truncate_like_score(ids: Sequence[int], limit: int | None) -> list[int]:
    """The ids `gsmv score` reads of an input: its last `limit` tokens (gsmv.models.verifier.score_sequences)."""
    ids = list(ids)
    return ids[-limit:] if limit else ids


def p_correct(model: Any, logits: torch.Tensor) -> torch.Tensor:
    """P(correct) from an export's logits: seq-cls (B, 1) -> (B,); token-cls (B, T, 2) -> (B, T), each prefix."""
    logits = logits.float()
    if logits.shape[-1] == 2:
        return torch.softmax(logits, -1)[..., 1]
    return torch.sigmoid(logits[..., 0] + float(getattr(model.config, "value_bias", 0.0)))


@torch.no_grad()
def exported_values(model: Any, sequences: Sequence[Sequence[int]], *, batch_size: int = 32) -> list[float]:
    """P(correct) of each id sequence (prompt + solution [+ EOS]) on an export, each cut as `gsmv score` cuts."""
    limit = input_limit_of(model)
    device = next(model.parameters()).device
    pad = model.config.pad_token_id
    out: list[float] = []
    for i in range(0, len(sequences), batch_size):
        rows = [truncate_like_score(s, limit) for s in sequences[i:i + batch_size]]
        lengths = torch.tensor([len(r) for r in rows])
        width = int(lengths.max())
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)  # right padding
        mask = (torch.arange(width)[None] < lengths[:, None]).long().to(device)
        p = p_correct(model, model(input_ids=ids, attention_mask=mask).logits).cpu()
        if p.dim() == 2:  # token classification: the value after the last real token
            p = p[torch.arange(len(rows)), lengths - 1]
        out += p.tolist()
    return out
