import json

import pytest
import torch

from gsmv.config import ModelConfig
from gsmv.errors import GsmvError
from gsmv.models.loading import (
    PRESETS,
    build_from_preset,
    count_params,
    load_model_and_tokenizer,
    train_flops_per_token,
)


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [("tiny", 50_000, 150_000), ("cpu-1m", 0.8e6, 1.3e6), ("cpu-5m", 4e6, 6e6), ("cpu-20m", 16e6, 24e6)],
)
def test_presets_build_with_expected_sizes(name, low, high, tiny_tokenizer):
    model = build_from_preset(ModelConfig(name=name), tiny_tokenizer)
    p = PRESETS[name]
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (p.n_layer, p.n_embd, p.n_head)
    assert cfg.vocab_size == len(tiny_tokenizer) and cfg.tie_word_embeddings
    counts = count_params(model)
    assert low <= counts["non_embedding"] <= high
    # Tied head: the embedding is counted once.
    assert counts["embedding"] == len(tiny_tokenizer) * p.n_embd
    assert counts["total"] == counts["embedding"] + counts["non_embedding"]


def test_tiny_preset_is_the_test_size_and_overrides_apply(tiny_tokenizer):
    m = build_from_preset(ModelConfig(name="tiny"), tiny_tokenizer)
    assert (m.config.num_hidden_layers, m.config.hidden_size, m.config.intermediate_size) == (2, 64, 128)
    m = build_from_preset(ModelConfig(name="tiny", n_layer=3, n_embd=32, n_head=2, max_position=64), tiny_tokenizer)
    assert (m.config.num_hidden_layers, m.config.hidden_size, m.config.num_attention_heads) == (3, 32, 2)
    assert m.config.max_position_embeddings == 64
    with pytest.raises(GsmvError, match="divisible"):
        build_from_preset(ModelConfig(name="tiny", n_embd=30, n_head=4), tiny_tokenizer)
    with pytest.raises(GsmvError, match="not a preset"):
        build_from_preset(ModelConfig(name="nope"), tiny_tokenizer)


def test_flops_formula(tiny_tokenizer):
    m = build_from_preset(ModelConfig(name="tiny"), tiny_tokenizer)
    n = count_params(m)["non_embedding"]
    d, v = 64, len(tiny_tokenizer)
    assert train_flops_per_token(m, 100) == 6 * (n + d * v) + 6 * 2 * 100 * d


@pytest.mark.parametrize("which", ["tiny_llama_dir", "tiny_gpt2_dir"])
def test_load_local_folder(which, request):
    folder = request.getfixturevalue(which)
    model, tok = load_model_and_tokenizer(folder, dtype=torch.float32, device="cpu")
    assert tok.pad_token_id is not None and tok.eos_token_id is not None
    assert model.config.pad_token_id == tok.pad_token_id
    ids = torch.tensor([tok.encode("Tom has 5 apples.")])
    out = model(input_ids=ids)
    assert out.logits.shape == (1, ids.shape[1], model.config.vocab_size)
    # dtype is honoured
    model16, _ = load_model_and_tokenizer(str(folder), dtype="bfloat16", device="cpu")
    assert next(model16.parameters()).dtype == torch.bfloat16


def test_gpt2_tokenizer_without_pad_gets_eos(tiny_gpt2_dir):
    _, tok = load_model_and_tokenizer(tiny_gpt2_dir, dtype=torch.float32, device="cpu")
    assert tok.pad_token_id == tok.eos_token_id


def test_bad_paths_raise_gsmv_error(tmp_path, tiny_llama_dir):
    with pytest.raises(GsmvError, match="not found"):
        load_model_and_tokenizer(tmp_path / "missing", dtype=torch.float32, device="cpu")
    with pytest.raises(GsmvError, match="no config.json"):
        load_model_and_tokenizer(tmp_path, dtype=torch.float32, device="cpu")
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(GsmvError, match="got a file"):
        load_model_and_tokenizer(f, dtype=torch.float32, device="cpu")
    with pytest.raises(GsmvError, match="preset"):
        load_model_and_tokenizer("tiny", dtype=torch.float32, device="cpu")
    # Hub ids can't be fetched here (no network): still a one-line GsmvError.
    with pytest.raises(GsmvError, match="hub model"):
        load_model_and_tokenizer("no-such-org/no-such-model-xyz", dtype=torch.float32, device="cpu")


def test_not_a_causal_lm(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(GsmvError, match="not a causal language model"):
        load_model_and_tokenizer(tmp_path, dtype=torch.float32, device="cpu")


def test_model_without_tokenizer(tmp_path, tiny_llama_dir):
    import shutil

    for f in tiny_llama_dir.iterdir():
        if not f.name.startswith("tokenizer"):
            shutil.copy(f, tmp_path / f.name)
    with pytest.raises(GsmvError, match="tokenizer"):
        load_model_and_tokenizer(tmp_path, dtype=torch.float32, device="cpu")


def test_corrupt_weights(tmp_path, tiny_llama_dir):
    import shutil

    for f in tiny_llama_dir.iterdir():
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(GsmvError, match="weights"):
        load_model_and_tokenizer(tmp_path, dtype=torch.float32, device="cpu")


def test_a_swapped_tokenizer_is_refused_not_grown_into(tmp_path, tiny_llama_dir, tiny_gpt2_tokenizer):
    """Issue 47: another model's tokenizer files copied into a generator folder (SmolLM2's 49k tokens into a
    320-row model) were loaded by growing the embedding, and `gsmv solve` answered word salad."""
    import shutil

    for f in tiny_llama_dir.iterdir():
        if not f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(f, tmp_path / f.name)
    tiny_gpt2_tokenizer.save_pretrained(tmp_path)  # 400 tokens; the model has 300 rows
    with pytest.raises(GsmvError) as err:
        load_model_and_tokenizer(tmp_path, dtype=torch.float32, device="cpu")
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path) in msg and "400 tokens" in msg and "300 rows" in msg


def test_added_tokens_still_get_new_rows(tmp_path, tiny_llama_dir):
    """What the embedding growth is for: tokens added to a model's own tokenizer (the verifier's value token)."""
    import shutil

    from transformers import AutoTokenizer

    for f in tiny_llama_dir.iterdir():
        shutil.copy(f, tmp_path / f.name)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    tok.add_special_tokens({"additional_special_tokens": ["<|new|>"]})
    tok.save_pretrained(tmp_path)
    model, tok = load_model_and_tokenizer(tmp_path, dtype=torch.float32, device="cpu")
    assert model.get_input_embeddings().num_embeddings == len(tok) == 301
