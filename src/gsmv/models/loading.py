"""Causal LMs: from-scratch presets, hub ids / local folders, residual dropout, size and FLOP counts.

    model = build_from_preset(cfg.model, tokenizer)           # "tiny", "cpu-1m", "cpu-5m", "cpu-20m"
    model, tok = load_model_and_tokenizer(path_or_hub_id, dtype=torch.float32, device="cpu")
    apply_residual_dropout(model, 0.2)                        # Llama-family and GPT-2-family

Every model folder gsmv writes holds the model and its tokenizer, so one call loads it.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig, PreTrainedModel

from gsmv.artifacts import safetensors_ok
from gsmv.config import ModelConfig, RunConfig
from gsmv.errors import GsmvError
from gsmv.models.sources import (
    ALIASES,
    PACKAGED,
    hub_cached_config,
    hub_offline,
    layer_count,
    looks_local,
    resolve_model,
)
from gsmv.models.tokenizer import check_tokenizer


@dataclass(frozen=True)
class Preset:
    n_layer: int
    n_embd: int
    n_head: int
    intermediate: int
    max_position: int = 512


# Non-embedding parameters per layer ≈ 4·d² (attention) + 3·d·ff (SwiGLU MLP).
PRESETS: dict[str, Preset] = {
    "tiny": Preset(n_layer=2, n_embd=64, n_head=4, intermediate=128),  # tests only: ~0.1M
    "cpu-1m": Preset(n_layer=5, n_embd=128, n_head=4, intermediate=352),  # 1.0M non-embedding
    "cpu-5m": Preset(n_layer=6, n_embd=256, n_head=8, intermediate=704),  # 4.8M
    "cpu-20m": Preset(n_layer=12, n_embd=384, n_head=6, intermediate=1024),  # 21.2M
}


def is_preset(name: str) -> bool:
    return name in PRESETS


def preset_config(mcfg: ModelConfig, tokenizer: Any) -> LlamaConfig:
    """The LlamaConfig of a preset with ModelConfig's overrides (0 = keep the preset's value)."""
    if mcfg.name not in PRESETS:
        raise GsmvError(f"model.name '{mcfg.name}' is not a preset: valid presets are {', '.join(PRESETS)}")
    p = PRESETS[mcfg.name]
    n_embd = mcfg.n_embd or p.n_embd
    n_head = mcfg.n_head or p.n_head
    if n_embd % n_head:
        raise GsmvError(f"model.n_embd {n_embd} is not divisible by model.n_head {n_head}")
    # Keep the preset's MLP ratio when the width is overridden; multiples of 8 for fast matmuls.
    intermediate = p.intermediate if not mcfg.n_embd else 8 * math.ceil(p.intermediate * n_embd / p.n_embd / 8)
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=n_embd,
        intermediate_size=intermediate,
        num_hidden_layers=mcfg.n_layer or p.n_layer,
        num_attention_heads=n_head,
        num_key_value_heads=n_head,
        max_position_embeddings=mcfg.max_position or p.max_position,
        tie_word_embeddings=True,
        attention_dropout=0.0,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_from_preset(cfg: ModelConfig | RunConfig, tokenizer: Any, *, seed: int | None = None) -> PreTrainedModel:
    """A randomly initialised LlamaForCausalLM for a preset (fp32 on CPU; move/cast it yourself)."""
    mcfg = cfg.model if isinstance(cfg, RunConfig) else cfg
    check_tokenizer(tokenizer)
    config = preset_config(mcfg, tokenizer)
    from transformers import LlamaForCausalLM

    if seed is not None:
        torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    _sync_special_ids(model, tokenizer)
    return model


def check_model_names(cfg: RunConfig, stages: list[str]) -> None:
    """model.name (finetune) and verifier.init and verifier.train_layers (train-verifier), checked with the config
    before any stage runs: the stage that would fail on them may come after the generator has trained."""
    if "finetune" in stages:
        _check_model_name("model.name", cfg.model.name)
        _check_layers("finetune.train_layers", cfg.finetune.train_layers, cfg.model.name, cfg, "generator")
        part = "finetune.lora_rank" if cfg.finetune.lora_rank else "finetune.train_layers"
        if (cfg.finetune.lora_rank or cfg.finetune.train_layers) and cfg.model.name in PRESETS:
            raise GsmvError(f"config key '{part}' is set: it trains part of a pretrained model, and model.name="
                            f"{cfg.model.name} is a from-scratch preset (random weights: train all of it)")
    if "train-verifier" in stages:
        if cfg.verifier.init not in ("generator", "base"):
            _check_model_name("verifier.init", cfg.verifier.init)
        _check_train_layers(cfg)


def _check_model_name(key: str, name: str) -> None:
    """A name that can give no model. Folders are the stage's to check (one may be another run's, made
    meanwhile); a hub id only when the hub is off (no network call here)."""
    known = ["generator", "base", *PRESETS, *ALIASES] if key == "verifier.init" else [*PRESETS, *ALIASES]
    if name in known or name in PACKAGED or looks_local(name):
        return
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.8) if "/" not in name else []
    if close:  # a bare hub id this close to a name gsmv knows is a typo of it
        raise GsmvError(f"config key '{key}' is '{name}': no such model; did you mean '{close[0]}'? (gsmv "
                        f"knows {', '.join(known)}; or a model folder or hub id)")
    if hub_offline() and hub_cached_config(name) is None:
        raise GsmvError(f"config key '{key}' is '{name}': not a preset, packaged model or folder, and HF_HUB_OFFLINE "
                        "is set with no copy in the hub cache")


def _check_train_layers(cfg: RunConfig) -> None:
    name = cfg.model.name if cfg.verifier.init in ("generator", "base") else cfg.verifier.init
    _check_layers("verifier.train_layers", cfg.verifier.train_layers, name, cfg, "verifier")


def _check_layers(key: str, k: int, name: str, cfg: RunConfig, what: str) -> None:
    """A train_layers key at most the model's layers, when they are known without loading it: a preset's, a
    packaged model's (listed) or a config.json's on disk."""
    if k <= 0:
        return
    n = (cfg.model.n_layer or PRESETS[name].n_layer) if name in PRESETS else layer_count(name)
    if n is not None and k > n:
        raise GsmvError(f"config key '{key}' is {k}: the {what} ({name}) has {n} layers")


def _as_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return None
    got = getattr(torch, str(dtype), None)
    if not isinstance(got, torch.dtype):
        raise GsmvError(f"unknown dtype '{dtype}': use float32, bfloat16 or float16")
    return got


def load_model_and_tokenizer(
    name_or_path: str | Path,
    *,
    dtype: torch.dtype | str | None = torch.float32,
    device: torch.device | str = "cpu",
    dropout: float = 0.0,
) -> tuple[PreTrainedModel, Any]:
    """Load a causal LM and its tokenizer from a local folder, a hub id or a packaged model (gsmv.models.sources).

    Raises GsmvError (one line naming the path) when the folder is missing, holds no
    causal LM, or has no usable tokenizer. The tokenizer gets pad = EOS when it has no pad.
    """
    name = str(name_or_path)
    if name in PRESETS:
        raise GsmvError(f"'{name}' is a from-scratch preset with no weights: run finetune to train it first")
    name = resolve_model(name)  # a packaged model becomes its converted folder when the hub is out of reach
    local = looks_local(name)
    path = Path(name).expanduser()
    if local:
        if not path.exists():
            raise GsmvError(f"{path}: model folder not found")
        if not path.is_dir():
            raise GsmvError(f"{path}: expected a model folder (config.json + weights), got a file")
        if not (path / "config.json").is_file():
            raise GsmvError(f"{path}: not a model folder (no config.json)")
        name = str(path)
    try:
        config = AutoConfig.from_pretrained(name)
    except Exception as e:  # noqa: BLE001 - hub/network/json errors come in many types
        where = name if local else f"hub model '{name}'"
        raise GsmvError(f"{where}: cannot load the model config ({_first_line(e)})") from None
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise GsmvError(f"{name}: model type '{config.model_type}' is not a causal language model")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except Exception as e:  # noqa: BLE001
        raise GsmvError(f"{name}: no usable tokenizer ({_first_line(e)}); save one beside the model") from None
    if isinstance(tokenizer, bool) or not hasattr(tokenizer, "encode"):
        raise GsmvError(f"{name}: no usable tokenizer")
    check_tokenizer(tokenizer, where=name)
    torch_dtype = _as_dtype(dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype if torch_dtype is not None else "auto")
    except Exception as e:  # noqa: BLE001
        raise GsmvError(f"{name}: cannot load the model weights ({_first_line(e)})") from None
    n_embed = model.get_input_embeddings().num_embeddings
    check_tokenizer_fits(tokenizer, n_embed, name)
    if len(tokenizer) > n_embed:
        # Some tokenizers carry added tokens the checkpoint has no rows for.
        model.resize_token_embeddings(len(tokenizer))
    _sync_special_ids(model, tokenizer)
    model.to(device)
    apply_residual_dropout(model, dropout)
    return model, tokenizer


def check_tokenizer_fits(tokenizer: Any, n_embed: int, where: str) -> None:
    """A tokenizer whose own vocabulary (added tokens aside) has ids past the model's embedding rows is not the
    model's: another model's tokenizer files copied into the folder. Growing the embedding would give those
    ids untrained rows and the model word salad, so it is refused; only added tokens get new rows."""
    base = getattr(tokenizer, "vocab_size", None)
    if isinstance(base, int) and base > n_embed:
        raise GsmvError(f"{where}: the tokenizer's vocabulary ({base:,} tokens) is larger than the model's "
                        f"embedding ({n_embed:,} rows): it is another model's tokenizer; put this model's own "
                        "tokenizer files back")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _sync_special_ids(model: PreTrainedModel, tokenizer: Any) -> None:
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.config.eos_token_id is None:
        model.config.eos_token_id = tokenizer.eos_token_id
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        gen.pad_token_id = tokenizer.pad_token_id
        if gen.eos_token_id is None:
            gen.eos_token_id = tokenizer.eos_token_id


# ---------------------------------------------------------------- residual dropout


def _dropout_hook(p: float):
    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        if not module.training or p == 0.0:
            return output
        if isinstance(output, tuple):  # attention returns (hidden, weights, ...)
            return (nn.functional.dropout(output[0], p, True), *output[1:])
        return nn.functional.dropout(output, p, True)

    return hook


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """Blocks with `self_attn` and `mlp` children (Llama, Mistral, Qwen2, Gemma, Phi-3 ... layouts)."""
    return [m for m in model.modules() if isinstance(getattr(m, "self_attn", None), nn.Module)
            and isinstance(getattr(m, "mlp", None), nn.Module)]


def train_top_layers(lm: nn.Module, k: int, key: str) -> None:
    """Config key `key` = k > 0: only the top k decoder layers and the final norm of causal LM `lm` train;
    every other parameter of it (embeddings, lower layers, an untied output layer) is frozen."""
    if k <= 0:
        return
    layers = decoder_layers(lm)
    if not layers:
        raise GsmvError(f"config key '{key}' is {k}: {type(lm).__name__} has no decoder layers of the Llama layout "
                        "(self_attn + mlp: Llama, Mistral, Qwen2, Gemma, Phi-3) that it can train alone")
    if k > len(layers):
        raise GsmvError(f"config key '{key}' is {k}: the model has {len(layers)} layers")
    # A frozen layer gets no residual dropout: it would only add noise that the trained layers must undo. On
    # SmolLM2-135M (trained without dropout) the solution NLL of 8 synth problems is 1.46 in eval mode, 8.60
    # with dropout 0.2 in all 30 layers and 3.26 with it in the top 4 only (2026-12-06).
    for layer in layers[:-k]:
        apply_residual_dropout(layer, 0.0)
    keep = {id(p) for layer in layers[-k:] for p in layer.parameters()}
    norm = getattr(lm.base_model, "norm", None) or getattr(lm.base_model, "ln_f", None)
    if norm is not None:
        keep |= {id(p) for p in norm.parameters()}
    for p in lm.parameters():
        if id(p) not in keep:
            p.requires_grad_(False)


def apply_residual_dropout(model: nn.Module, p: float) -> nn.Module:
    """Dropout with rate p on each block's attention and MLP outputs, before they join the residual stream.

    GPT-2 family: sets `resid_pdrop` and its existing residual Dropout modules; its attention and
    embedding dropouts are set to 0 so p is the model's only dropout. Llama-style families: forward
    hooks on `self_attn` and `mlp` (hooks rather than wrapper modules keep state-dict keys, so saved
    folders stay loadable by plain transformers). Calling again replaces the previous rate.
    Dropout acts in train mode only.
    """
    if not 0.0 <= p < 1.0:
        raise GsmvError(f"residual dropout must be in [0, 1), got {p}")
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", "")
    if model_type == "gpt2":
        config.resid_pdrop = p
        config.attn_pdrop = 0.0
        config.embd_pdrop = 0.0
        for name, m in model.named_modules():
            if isinstance(m, nn.Dropout):
                m.p = p if name.endswith(("resid_dropout", "mlp.dropout")) else 0.0
        return model
    layers = decoder_layers(model)
    if not layers:
        if p == 0.0:
            return model
        raise GsmvError(f"residual dropout is not supported for model type '{model_type}' (Llama- or GPT-2-style only)")
    for layer in layers:
        for child in (layer.self_attn, layer.mlp):
            old = getattr(child, "_gsmv_dropout_handle", None)
            if old is not None:
                old.remove()
                child._gsmv_dropout_handle = None
            if p > 0.0:
                child._gsmv_dropout_handle = child.register_forward_hook(_dropout_hook(p))
    if config is not None and hasattr(config, "attention_dropout"):
        config.attention_dropout = 0.0
    return model


# ---------------------------------------------------------------- size and cost


def embedding_params(model: nn.Module) -> int:
    """Parameters of token/position embeddings and of an untied output head."""
    seen: set[int] = set()
    total = 0
    mods = [model.get_input_embeddings()] if hasattr(model, "get_input_embeddings") else []
    if hasattr(model, "get_output_embeddings") and model.get_output_embeddings() is not None:
        mods.append(model.get_output_embeddings())
    mods += [m for n, m in model.named_modules() if isinstance(m, nn.Embedding) and n.endswith(("wpe", "embed_positions"))]
    for m in mods:
        for prm in m.parameters():
            if id(prm) not in seen:
                seen.add(id(prm))
                total += prm.numel()
    return total


def count_params(model: nn.Module) -> dict[str, int]:
    """{'total', 'embedding', 'non_embedding'} parameter counts (tied weights counted once)."""
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    emb = embedding_params(model)
    return {"total": total, "embedding": emb, "non_embedding": total - emb}


def train_flops_per_token(model: nn.Module, seq_len: int) -> float:
    """Training FLOPs per token: 6·(N_non_embedding + d·V) + 6·n_layer·seq_len·d.

    6·N: forward 2·N plus backward 4·N multiply-adds of the weight matmuls; d·V is the output
    projection (big next to N for small models); the last term is attention scores and
    weighted sums over a context of seq_len (Kaplan et al. 2020, full, unmasked score matrix).
    """
    cfg = model.config
    d = getattr(cfg, "hidden_size", None) or cfg.n_embd
    n_layer = getattr(cfg, "num_hidden_layers", None) or cfg.n_layer
    vocab = cfg.vocab_size
    n = count_params(model)["non_embedding"]
    return 6.0 * (n + d * vocab) + 6.0 * n_layer * seq_len * d


def check_model_folder(folder: Path, also: tuple[str, ...] = ()) -> list:
    """What is damaged in a model folder the training loop finished (the pipeline's check of finetune and
    train-verifier): config.json, the tokenizer, whole weights and the files named in `also` (a .safetensors one
    must be whole too; gsmv.models.verifier.check_verifier_folder names the verifier's). A damaged folder is
    deleted as a whole: the training loop then writes it again from its last checkpoint."""
    if not folder.is_dir():
        return [(None, f"{folder} is missing")]
    # tokenizer_config.json: save_pretrained writes it for every tokenizer (the other tokenizer files vary by model).
    bad = [f for f in ("config.json", "tokenizer_config.json") if not (folder / f).is_file()]
    index = folder / "model.safetensors.index.json"
    weights: list[str] = []
    if index.is_file():
        try:
            weights = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            bad.append(index.name)
    elif (folder / "model.safetensors").exists():
        weights = ["model.safetensors"]
    elif not any(folder.glob("pytorch_model*.bin")):  # torch pickles: nothing cheap to check beyond existence
        bad.append("model weights")
    weights += [f for f in also if f.endswith(".safetensors")]
    bad += [f for f in also if not f.endswith(".safetensors") and not (folder / f).is_file()]
    bad += [w for w in weights if not safetensors_ok(folder / w)]
    return [(folder, f"{folder}: {', '.join(bad)} missing or damaged")] if bad else []
