"""README.md model cards (Hugging Face format: YAML metadata, then text) for the model folders gsmv writes.

Every generator and verifier folder, and every export, says what it is, how to feed it and what its output
means, so a folder found on disk (or pushed to a hub) is usable without gsmv's source at hand.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import gsmv

PROMPT_FORMAT = ("format_prompt(question): the question followed by a newline, encoded with the tokenizer's own "
                 "special tokens (e.g. a BOS); then the solution's tokens without special tokens; then EOS when "
                 "the solution is finished. Calculator annotations `<<expr=result>>` stay in the text, and the "
                 "final answer follows `#### `.")

_KINDS = {
    "generator": ("text-generation", "a generator fine-tuned on math word problem solutions",
                  "Sample solutions for a prompt; the answer is the number after `#### `."),
    "verifier": ("text-generation", "a verifier: a causal LM plus a value head (gsmv.models.verifier)",
                 "P(correct) = sigmoid(gain · logit(value token) + bias) at the last token (token head; "
                 "value_head.safetensors holds gain and bias, verifier_config.json the token id), or "
                 "sigmoid(weight · h + bias) on the last hidden state (linear head). Load it with "
                 "gsmv.models.verifier.load_verifier, or export it with `gsmv export` for transformers' "
                 "classification classes: a sequence-classification class loaded on this folder gets a "
                 "random head."),
    "verifier-export": ("text-classification", "a gsmv verifier exported to a transformers classification class",
                        "AutoModelForSequenceClassification: the logit at the last non-pad token; "
                        "P(correct) = sigmoid(logit + config.value_bias) (0 where the bias is folded into the "
                        "weights: then `pipeline(\"text-classification\")` returns P(correct); the logit alone "
                        "ranks samples exactly). AutoModelForTokenClassification: two labels, "
                        "softmax(logits)[..., 1] (label \"correct\") after every token, the value of each prefix "
                        "(`pipeline(\"token-classification\", ignore_labels=[])` reports it per token). These are "
                        "gsmv's numbers exactly for inputs of at most config.gsmv.max_len tokens; gsmv reads only "
                        "the last max_len tokens of a longer input (the tokenizer truncates on the left to that "
                        "length when asked)."),
}


def base_license(base: str) -> tuple[str, str]:
    """(licence, base_model hub id or "") of a model started from `base`: gsmv's MIT for a from-scratch model
    (trained on MIT data only), a packaged model's own, a folder's from its card, else "other" (a hub id's
    licence is not known offline: the card then says the base model's applies)."""
    from gsmv.models.sources import packaged

    if not base or base.startswith("random "):
        return "mit", ""
    from gsmv.models.loading import is_preset

    if is_preset(base):
        return "mit", ""
    pm = packaged(base)
    if pm is not None:
        return pm.license, pm.hub_id
    card = Path(base).expanduser() / "README.md"
    if card.is_file():
        # Only the card's YAML front matter (between a first line "---" and the next "---" line) is read.
        front = re.match(r"---\n(.*?)\n---\s*\n", card.read_text(errors="replace"), re.S)
        fields = {k: v.strip("'\"") for k, v in re.findall(r"^(\w+): *(\S.*?) *$", front[1], re.M)} if front else {}
        return fields.get("license", "other"), fields.get("base_model", "")
    if re.fullmatch(r"[\w.-]+/[\w.-]+", base) and not Path(base).exists():  # a hub id, not a folder
        return "other", base
    return "other", ""


def card_text(kind: str, *, base: str = "", extra: dict[str, Any] | None = None) -> str:
    """The README.md of a model folder of this kind (generator, verifier, verifier-export)."""
    extra = dict(extra or {})
    pipeline_tag, what, output = _KINDS[kind]
    if kind == "verifier-export" and extra.get("target") == "token-cls":
        pipeline_tag = "token-classification"
    labels = extra.pop("labels", None)
    licence, base_model = base_license(base)
    meta = ["---", "library_name: transformers", f"pipeline_tag: {pipeline_tag}", f"license: {licence}",
            "tags:", "- gsmv", "- math", "- verifier" if kind != "generator" else "- generator"]
    if base_model:
        meta.append(f"base_model: {base_model}")
    if extra.get("dataset"):
        meta += ["datasets:", f"- {extra['dataset']}"]
    meta.append("---")
    started = [f"Started from: {base}", ""] if base else []
    if licence == "other":
        started += [f"Licence: that of the base model ({base_model or base}).", ""]
    lines = [*meta, "", f"# {kind}: {what}", ""] + started + [ f"Written by gsmv {gsmv.__version__}, an implementation of Cobbe "
             "et al. 2021, \"Training Verifiers to Solve Math Word Problems\".", "", "## Input", "", PROMPT_FORMAT,
             "", "## Output", "", output]
    if labels:
        lines += ["", f"Trained on {labels} labels (outcome: the final answer's correctness at every token; "
                  "process: step-level truth, 1 until the first wrong step)."]
    rest = {k: v for k, v in extra.items() if k not in ("dataset", "target") and v is not None}
    if rest:
        lines += ["", "## Details", ""] + [f"- {k}: {v}" for k, v in rest.items()]
    return "\n".join(lines) + "\n"


def write_card(folder: str | Path, kind: str, *, base: str = "", extra: dict[str, Any] | None = None) -> None:
    (Path(folder) / "README.md").write_text(card_text(kind, base=base, extra=extra))
