"""LoRA fine-tuning of the generator (finetune.lora_rank > 0) through peft, saved as merged plain weights.

Every reader of a generator folder (sampling, scoring, export, a verifier started from it) expects a plain
transformers model, so no adapter folder is ever written: each model folder holds W + (alpha / r) · B @ A
under the base model's own parameter names. The resumable state (accelerate's) keeps the adapter itself, so a
killed run resumes to the same weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from gsmv.errors import GsmvError
from gsmv.train.checkpoint import SaveModelFn

# Every linear layer of a decoder block (Llama/Qwen2/Mistral names, then GPT-2's Conv1D ones); the embeddings
# and output layer stay frozen.
_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "c_attn", "c_proj", "c_fc")


def add_lora(model: nn.Module, rank: int, alpha: float) -> nn.Module:
    """`model` wrapped by peft with a LoRA adapter of this rank on every decoder linear layer (only the
    adapter trains). Its forward equals `model`'s until the adapter trains (peft starts B at zero)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise GsmvError("config key 'finetune.lora_rank' is set: LoRA needs peft; install gsmv's extra 'lora' "
                        "(pip install -e \".[lora]\")") from None
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    targets = [t for t in _TARGETS if t in names]
    if not targets:
        raise GsmvError(f"config key 'finetune.lora_rank' is set: {type(model).__name__} has none of the linear "
                        f"layers LoRA is put on ({', '.join(_TARGETS)})")
    fan_in_fan_out = getattr(getattr(model, "config", None), "model_type", "") == "gpt2"  # Conv1D weights
    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets,
                                            fan_in_fan_out=fan_in_fan_out, bias="none"))


def merged_state_dict(peft_model: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The base model's state dict with each adapted weight replaced by W + scaling · B @ A, from `state_dict`
    (the peft model's, as accelerate gathers it): the keys and shapes a plain load of the base model expects."""
    prefix = "base_model.model."
    adapted = {name.removeprefix(prefix): module for name, module in peft_model.named_modules()
               if hasattr(module, "lora_A") and hasattr(module, "base_layer")}
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if ".lora_" in key:
            continue
        key = key.removeprefix(prefix)
        if ".base_layer." not in key:
            out[key] = value
            continue
        owner, param = key.split(".base_layer.")
        out[f"{owner}.{param}"] = value
        module = adapted[owner]
        if param == "weight":
            merged = value.float()
            for name in module.active_adapters:  # gsmv adds one ("default"); each active one adds its update
                a = state_dict[f"{prefix}{owner}.lora_A.{name}.weight"].float()
                b = state_dict[f"{prefix}{owner}.lora_B.{name}.weight"].float()
                delta = (b @ a) * module.scaling[name]
                merged = merged + (delta.T if module.fan_in_fan_out else delta)  # not in place: value is live
            out[f"{owner}.weight"] = merged.to(value.dtype)
    return out


def merged_saver(save: SaveModelFn) -> SaveModelFn:
    """A save_model that writes a peft model's base model with the adapter merged in, through `save`."""

    def save_merged(model: nn.Module, folder: Path, state_dict: dict[str, torch.Tensor]) -> None:
        save(model.get_base_model(), folder, merged_state_dict(model, state_dict))

    return save_merged
