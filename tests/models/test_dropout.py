import copy

import pytest
import torch

from gsmv.errors import GsmvError
from gsmv.models.loading import apply_residual_dropout, load_model_and_tokenizer


@pytest.fixture(params=["tiny_llama_dir", "tiny_gpt2_dir"])
def model_and_ids(request):
    model, tok = load_model_and_tokenizer(request.getfixturevalue(request.param), dtype=torch.float32, device="cpu")
    ids = torch.tensor([tok.encode("Sam has 13 coins, buys 20 more. <<13+20=33>>33")])
    return model, ids


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_dropout_changes_train_outputs_only(model_and_ids):
    model, ids = model_and_ids
    base = copy.deepcopy(model)
    apply_residual_dropout(base, 0.0)
    base.eval()
    ref = _logits(base, ids)

    apply_residual_dropout(model, 0.3)
    model.train()
    torch.manual_seed(0)
    a = _logits(model, ids)
    b = _logits(model, ids)
    assert not torch.allclose(a, ref, atol=1e-5)
    assert not torch.allclose(a, b, atol=1e-5)  # fresh masks each pass

    model.eval()
    assert torch.equal(_logits(model, ids), _logits(model, ids))
    assert torch.allclose(_logits(model, ids), ref, atol=1e-6)


def test_p_zero_train_mode_is_deterministic_and_reapply_replaces(model_and_ids):
    model, ids = model_and_ids
    apply_residual_dropout(model, 0.5)
    apply_residual_dropout(model, 0.0)  # replaces, does not stack
    model.train()
    assert torch.equal(_logits(model, ids), _logits(model, ids))
    model.eval()
    assert torch.equal(_logits(model, ids), _logits(model.train(), ids))


def test_dropout_only_on_residual_branches(tiny_llama_dir, tiny_gpt2_dir):
    gpt2, _ = load_model_and_tokenizer(tiny_gpt2_dir, dtype=torch.float32, device="cpu", dropout=0.2)
    rates = {n: m.p for n, m in gpt2.named_modules() if isinstance(m, torch.nn.Dropout)}
    assert rates["transformer.h.0.attn.resid_dropout"] == 0.2 and rates["transformer.h.1.mlp.dropout"] == 0.2
    assert rates["transformer.drop"] == 0.0 and rates["transformer.h.0.attn.attn_dropout"] == 0.0
    assert gpt2.config.resid_pdrop == 0.2

    llama, _ = load_model_and_tokenizer(tiny_llama_dir, dtype=torch.float32, device="cpu", dropout=0.2)
    hooked = [n for n, m in llama.named_modules() if getattr(m, "_gsmv_dropout_handle", None) is not None]
    assert sorted(hooked) == sorted(f"model.layers.{i}.{b}" for i in range(2) for b in ("self_attn", "mlp"))
    # Hooks leave the state dict alone, so the folder stays loadable by plain transformers.
    plain, _ = load_model_and_tokenizer(tiny_llama_dir, dtype=torch.float32, device="cpu")
    assert list(llama.state_dict()) == list(plain.state_dict())


def test_bad_rate_and_unsupported_family():
    with pytest.raises(GsmvError):
        apply_residual_dropout(torch.nn.Linear(2, 2), 1.0)
    with pytest.raises(GsmvError, match="not supported"):
        apply_residual_dropout(torch.nn.Linear(2, 2), 0.1)
    assert isinstance(apply_residual_dropout(torch.nn.Linear(2, 2), 0.0), torch.nn.Linear)
