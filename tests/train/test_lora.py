"""LoRA generators (finetune.lora_rank): merged plain folders that equal the adapted model, resume, card."""

import json

import pytest
import torch
from crash import Killed, kill_at
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from gsmv.artifacts import RunPaths, read_metrics
from gsmv.errors import GsmvError
from gsmv.train import finetune
from gsmv.train.lora import add_lora, merged_state_dict

pytest.importorskip("peft")


def _randomize_adapter(model):
    # peft starts B at zero (the adapted model equals the base); a trained adapter does not.
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_the_merged_weights_load_as_the_plain_model_and_give_the_adapted_logits(family, tiny_llama_dir,
                                                                              tiny_gpt2_dir):
    folder = tiny_llama_dir if family == "llama" else tiny_gpt2_dir
    peft_model = add_lora(AutoModelForCausalLM.from_pretrained(folder), rank=4, alpha=8.0)
    _randomize_adapter(peft_model)
    plain = AutoModelForCausalLM.from_pretrained(folder)
    base_keys = set(plain.state_dict())
    merged = merged_state_dict(peft_model, peft_model.state_dict())
    assert set(merged) == base_keys
    plain.load_state_dict(merged, strict=True)
    ids = torch.tensor([[3, 7, 11, 5, 9, 4]])
    peft_model.eval(), plain.eval()
    with torch.no_grad():
        want, got = peft_model(input_ids=ids).logits, plain(input_ids=ids).logits
    assert not torch.allclose(want, AutoModelForCausalLM.from_pretrained(folder)(input_ids=ids).logits, atol=1e-3)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_a_lora_generator_is_a_plain_merged_folder_and_resumes_to_the_same_weights(tiny_cfg, tiny_llama_dir,
                                                                                   tmp_path):
    cfg = tiny_cfg
    cfg.model.name, cfg.finetune.lora_rank, cfg.finetune.lora_alpha = str(tiny_llama_dir), 4, 8.0
    cfg.finetune.lr, cfg.finetune.epochs, cfg.finetune.save_every = 1e-2, 2.0, 4
    cfg.name = "full"
    finetune.main(cfg)
    final = RunPaths(cfg.run_dir).generator_final
    assert not (final / "adapter_config.json").exists()
    start, end = load_file(tiny_llama_dir / "model.safetensors"), load_file(final / "model.safetensors")
    assert set(start) == set(end)
    changed = {k for k in start if not torch.equal(start[k], end[k])}
    # Only the adapted linear layers move; embeddings and norms stay the base model's.
    assert changed and all(k.endswith("_proj.weight") for k in changed), sorted(changed)
    card = (final / "README.md").read_text()
    assert "LoRA rank 4, alpha 8 on down_proj, gate_proj, k_proj" in card and f"Started from: {tiny_llama_dir}" in card and "license: other" in card
    assert json.loads((final / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]

    cfg.name = "killed"
    with pytest.raises(Killed):
        finetune.main(cfg, on_step=kill_at(6))
    finetune.main(cfg)
    again = load_file(RunPaths(cfg.run_dir).generator_final / "model.safetensors")
    assert all(torch.equal(end[k], again[k]) for k in end)
    starts = [r for r in read_metrics(cfg.run_dir / "metrics.jsonl", "finetune") if r.get("event") == "start"]
    assert starts[-1]["resumed_from"].endswith("step-000004")


def test_top_layers_of_a_generator_train_alone(tiny_cfg, tiny_llama_dir):
    cfg = tiny_cfg
    cfg.model.name, cfg.finetune.train_layers, cfg.finetune.epochs = str(tiny_llama_dir), 1, 1.0
    finetune.main(cfg)
    final = RunPaths(cfg.run_dir).generator_final
    start, end = load_file(tiny_llama_dir / "model.safetensors"), load_file(final / "model.safetensors")
    changed = {k for k in start if not torch.equal(start[k], end[k])}
    assert changed and all(k.startswith(("model.layers.1.", "model.norm.")) for k in changed), sorted(changed)
    assert "the top 1 decoder layers" in (final / "README.md").read_text()
    cfg.finetune.train_layers, cfg.name = 3, "too-many"
    with pytest.raises(GsmvError, match="'finetune.train_layers' is 3: the model has 2 layers"):
        finetune.main(cfg)


def test_top_layers_of_a_model_without_the_llama_layout_is_one_line(tiny_gpt2_dir):
    from gsmv.models.loading import train_top_layers

    with pytest.raises(GsmvError, match="'finetune.train_layers' is 1: GPT2LMHeadModel has no decoder layers of"):
        train_top_layers(AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir), 1, "finetune.train_layers")


def test_lora_without_peft_is_one_line_naming_the_extra(monkeypatch, tiny_llama_dir):
    import builtins

    real = builtins.__import__

    def no_peft(name, *a, **kw):
        if name == "peft" or name.startswith("peft."):
            raise ImportError(name)
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_peft)
    with pytest.raises(GsmvError, match=r"LoRA needs peft; install gsmv's extra 'lora'"):
        add_lora(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), rank=2, alpha=4.0)


@pytest.mark.parametrize("overrides, message", [
    (["finetune.lora_rank=-1"], "'finetune.lora_rank' must be >= 0"),
    (["finetune.train_layers=-2"], "'finetune.train_layers' must be >= 0"),
    (["finetune.lora_rank=4", "finetune.train_layers=2"], "are both set: pick one"),
    (["finetune.lora_rank=4", "finetune.lora_alpha=0"], "'finetune.lora_alpha' must be > 0"),
])
def test_bad_partial_training_keys_are_one_line(overrides, message):
    from gsmv.config import load_config

    with pytest.raises(GsmvError, match=message):
        load_config("smoke-synth", overrides)


def test_a_generator_cards_licence_is_its_base_models():
    from gsmv.model_card import card_text

    smol = card_text("generator", base="smollm2-135m")
    assert "license: apache-2.0" in smol and "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in smol
    assert "license: mit" in card_text("generator", base="cpu-1m")  # from scratch on MIT data
    hub = card_text("generator", base="some-org/some-model")
    assert "license: other" in hub and "Licence: that of the base model (some-org/some-model)." in hub


def test_a_folders_licence_is_read_from_its_cards_front_matter_only(tmp_path):
    from gsmv.model_card import base_license

    (tmp_path / "README.md").write_text('---\nlicense: "apache-2.0"\nbase_model: org/m\n---\n\nlicense: mit\n')
    assert base_license(str(tmp_path)) == ("apache-2.0", "org/m")
    (tmp_path / "README.md").write_text("# no front matter\n\n---\nlicense: mit\n---\n")
    assert base_license(str(tmp_path)) == ("other", "")
