"""The verifier model: heads, LM path, save/load, batched scoring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gsmv.errors import GsmvError
from gsmv.models.verifier import (
    CONFIG_NAME,
    HEAD_NAME,
    PROBE_L2,
    Verifier,
    build_verifier,
    load_verifier,
    prompt_ids,
    score_sequences,
)


def _ids(tok, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    enc = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(map(len, enc))
    ids = torch.full((len(enc), width), tok.pad_token_id)
    mask = torch.zeros((len(enc), width), dtype=torch.long)
    for i, e in enumerate(enc):
        ids[i, :len(e)] = torch.tensor(e)
        mask[i, :len(e)] = 1
    return ids, mask


TEXTS = ["Raj has 5 boxes.\nThere are 5*3 = <<5*3=15>>15 coins.\n#### 15", "Sam has 13 coins.\n#### 30"]


def test_token_head_is_gain_and_bias_on_the_reserved_token_logit(tiny_llama_dir):
    ver, tok = build_verifier(tiny_llama_dir, head="token")
    ver.eval()
    vid = tok.convert_tokens_to_ids("<|value|>")
    assert ver.value_token_id == vid
    ids, mask = _ids(tok, TEXTS)
    with torch.no_grad():
        out = ver(ids, mask)
        plain = ver.lm(input_ids=ids, attention_mask=mask).logits
        # The LM path is the LM itself.
        torch.testing.assert_close(out.logits, plain)
        # Initial head (gain 1, bias 0): the value is the sigmoid of the LM's own reserved-token logit.
        torch.testing.assert_close(out.values, torch.sigmoid(plain[..., vid]))
        ver.gain.fill_(1.7)
        ver.bias.fill_(-0.3)
        out2 = ver(ids, mask)
        torch.testing.assert_close(out2.value_logits, 1.7 * plain[..., vid] - 0.3)
        torch.testing.assert_close(out2.values, torch.sigmoid(1.7 * plain[..., vid] - 0.3))


def test_value_follows_the_unembedding_row(tiny_llama_dir):
    """Changing the reserved token's unembedding row changes the values (the head reads the LM)."""
    ver, tok = build_verifier(tiny_llama_dir, head="token")
    ver.eval()
    ids, mask = _ids(tok, TEXTS)
    with torch.no_grad():
        before = ver(ids, mask, return_logits=False).values.clone()
        ver.lm.get_output_embeddings().weight[ver.value_token_id] += 0.5
        after = ver(ids, mask, return_logits=False).values
    assert not torch.allclose(before, after)


def _zero3_like(model: torch.nn.Module, weight: torch.nn.Parameter) -> None:
    """Imitate DeepSpeed ZeRO-3 for one parameter: outside the forward of a module that holds it, it is an empty
    placeholder whose real shape is in ds_shape; each holder's own forward gathers it for its duration."""
    full = weight.data
    weight.ds_shape = full.shape
    weight.data = full.new_empty(0)

    def gather(mod, args):
        weight.data = full

    def release(mod, args, out):
        weight.data = full.new_empty(0)

    for mod in model.modules():
        if any(p is weight for p in mod._parameters.values()):
            mod.register_forward_pre_hook(gather)
            mod.register_forward_hook(release)


@pytest.mark.parametrize("head", ["token", "linear"])
def test_values_under_zero3_style_sharding_of_the_unembedding(tiny_llama_dir, head):
    ver, tok = build_verifier(tiny_llama_dir, head=head)
    ver.eval()
    ids, mask = _ids(tok, TEXTS)
    with torch.no_grad():
        want = ver(ids, mask, return_logits=False).values
    unembed = ver.lm.get_output_embeddings().weight
    _zero3_like(ver.lm, unembed)
    assert unembed.numel() == 0  # what the token head would index outside the unembedding's forward
    with torch.no_grad():
        torch.testing.assert_close(ver(ids, mask, return_logits=False).values, want)
    # A verifier built on an already-sharded LM (ZeRO-3's zero.Init) sees the real vocabulary and hidden sizes.
    again = Verifier(ver.lm, head=head, value_token_id=ver.value_token_id, tokenizer=tok)
    assert again.value_token_id == ver.value_token_id


def test_logits_mask_and_no_logits(tiny_llama_dir):
    ver, tok = build_verifier(tiny_llama_dir, head="token")
    ver.eval()
    ids, mask = _ids(tok, TEXTS)
    sel = mask.bool().clone()
    sel[:, :3] = False
    with torch.no_grad():
        full = ver(ids, mask)
        part = ver(ids, mask, logits_mask=sel)
        none = ver(ids, mask, return_logits=False)
    assert none.logits is None
    assert part.logits.shape == (int(sel.sum()), full.logits.shape[-1])
    torch.testing.assert_close(part.logits, full.logits[sel])
    torch.testing.assert_close(none.values, full.values)


def test_linear_head_starts_at_one_half(tiny_llama_dir):
    ver, tok = build_verifier(tiny_llama_dir, head="linear")
    ids, mask = _ids(tok, TEXTS)
    with torch.no_grad():
        assert torch.all(ver(ids, mask).values == 0.5)
        ver.linear.weight.normal_()
        hidden = ver.hidden_states(ids, mask)
        torch.testing.assert_close(ver(ids, mask).values, torch.sigmoid(ver.linear(hidden).squeeze(-1)))


def test_linear_head_starts_from_a_probe_that_ranks_its_data(tiny_llama_dir):
    # Features whose label is read off one direction, on a scale and offset far from standardised: the fitted head
    # ranks held-out rows by that direction, and its mean value sits near the base rate.
    ver, _ = build_verifier(tiny_llama_dir, head="linear")
    g = torch.Generator().manual_seed(0)
    d = ver.linear.in_features
    n, per = 400, 5  # samples, positions each (a sample's positions share its label)
    direction = torch.randn(d, generator=g)
    base = torch.randn(n, d, generator=g)
    y = ((base @ direction) + 0.5 * torch.randn(n, generator=g) > 0.8).float()
    h = (base.repeat_interleave(per, 0) + 0.1 * torch.randn(n * per, d, generator=g)) * 30 + 7
    ids = torch.arange(n).repeat_interleave(per)
    ver.fit_linear_head(h[: (n // 2) * per], y.repeat_interleave(per)[: (n // 2) * per], ids[: (n // 2) * per])
    with torch.no_grad():
        v = torch.sigmoid(ver.linear(h[(n // 2) * per:]).squeeze(-1)).reshape(-1, per).mean(1)
    test_y = y[n // 2:]
    pos, neg = v[test_y == 1], v[test_y == 0]
    auc = float((pos[:, None] > neg[None, :]).float().mean())
    assert auc > 0.85
    assert abs(float(v.mean()) - float(y.mean())) < 0.1


def test_linear_probe_regularises_more_on_noise(tiny_llama_dir):
    ver, _ = build_verifier(tiny_llama_dir, head="linear")
    g = torch.Generator().manual_seed(1)
    d = ver.linear.in_features
    h = torch.randn(60, d, generator=g)
    y = (torch.rand(60, generator=g) < 0.3).float()  # labels unrelated to the features
    assert ver.fit_linear_head(h, y, torch.arange(60)) == max(PROBE_L2)


@pytest.mark.parametrize("head", ["token", "linear"])
def test_save_load_round_trip(tiny_llama_dir, tmp_path, head):
    ver, tok = build_verifier(tiny_llama_dir, head=head)
    with torch.no_grad():
        if head == "token":
            ver.gain.fill_(0.37)
            ver.bias.fill_(1.25)
        else:
            ver.linear.weight.normal_()
            ver.linear.bias.fill_(0.4)
    ver.eval()
    ids, mask = _ids(tok, TEXTS)
    ver.save_pretrained(tmp_path / "v")
    assert (tmp_path / "v" / CONFIG_NAME).is_file() and (tmp_path / "v" / HEAD_NAME).is_file()
    back, tok2 = load_verifier(tmp_path / "v", dtype=torch.float32, device="cpu")
    assert not back.training and back.head == head
    assert tok2.convert_tokens_to_ids("<|value|>") == tok.convert_tokens_to_ids("<|value|>")
    with torch.no_grad():
        torch.testing.assert_close(back(ids, mask).values, ver(ids, mask).values)


def test_hf_tokenizer_without_value_token_gets_one(tiny_gpt2_dir, tmp_path):
    ver, tok = build_verifier(tiny_gpt2_dir, head="token")
    vid = ver.value_token_id
    assert tok.convert_ids_to_tokens(vid) == "<|value|>"
    assert vid < ver.lm.get_output_embeddings().weight.shape[0]
    ver.save_pretrained(tmp_path / "g")
    back, tok2 = load_verifier(tmp_path / "g")
    assert back.value_token_id == vid and tok2.convert_tokens_to_ids("<|value|>") == vid
    ids, mask = _ids(tok, TEXTS)
    ver.eval()
    with torch.no_grad():
        torch.testing.assert_close(back(ids, mask).values, ver(ids, mask).values)


def test_residual_dropout_is_applied(tiny_llama_dir):
    ver, tok = build_verifier(tiny_llama_dir, head="token", dropout=0.5)
    ids, mask = _ids(tok, TEXTS)
    torch.manual_seed(0)
    ver.train()
    with torch.no_grad():
        a, b = ver(ids, mask).values, ver(ids, mask).values
        ver.eval()
        c, d = ver(ids, mask).values, ver(ids, mask).values
    assert not torch.allclose(a, b)
    torch.testing.assert_close(c, d)


def test_calibrate_head_centres_values_on_the_base_rate(tiny_llama_dir):
    ver, tok = build_verifier(tiny_llama_dir, head="token")
    ids, mask = _ids(tok, TEXTS)
    with torch.no_grad():
        z = ver.reserved_logits(ver.hidden_states(ids, mask))[mask.bool()]
    ver.calibrate_head(z * 10 - 30, target_rate=0.3)  # a saturated, shifted logit distribution
    with torch.no_grad():
        vl = ver.gain * (z * 10 - 30) + ver.bias
    assert float(vl.mean()) == pytest.approx(math.log(0.3 / 0.7), abs=1e-4)
    assert float(ver.gain.detach()) > 0  # still increasing in the reserved token's logit


def test_score_sequences_matches_single_forward(tiny_llama_dir):
    ver, tok = build_verifier(tiny_llama_dir, head="token")
    ver.eval()
    rng = np.random.default_rng(0)
    seqs = [list(rng.integers(0, len(tok) - 3, size=n)) for n in (5, 17, 9, 30, 1, 12)]
    starts = [2, 5, 0, 10, 0, 12]
    res = ver.score_sequences(seqs, starts, batch_size=4, pad_id=tok.pad_token_id)
    for s, st, (final, vals) in zip(seqs, starts, res, strict=True):
        with torch.no_grad():
            v = ver(torch.tensor([s]), return_logits=False).values[0].numpy()
        np.testing.assert_allclose(vals, v[st:], rtol=1e-5, atol=1e-6)
        assert final == pytest.approx(float(v[-1]), abs=1e-6)
        assert len(vals) == len(s) - st


@pytest.mark.parametrize("model", ["tiny_llama_dir", "tiny_gpt2_dir"])
@pytest.mark.parametrize("head", ["token", "linear"])
def test_shared_prompt_scoring_equals_the_plain_path(model, head, request):
    # One problem's samples read their prompt once (its cache copied to each row): every value must be
    # what the plain padded batch gives, for rotary (Llama) and absolute (GPT-2) positions alike, with
    # prompts seen once, empty solutions and over-long sequences (plain path) mixed in.
    ver, tok = build_verifier(request.getfixturevalue(model), head=head)
    ver.eval()
    if head == "linear":
        torch.nn.init.normal_(ver.linear.weight, std=0.5)
    rng = np.random.default_rng(0)
    word = lambda n: [int(t) for t in rng.integers(0, len(tok) - 3, size=n)]  # noqa: E731
    prompts = [word(7), word(12), word(3)]
    seqs, starts = [], []
    for k, n_sol in [(0, 5), (0, 9), (1, 1), (0, 14), (1, 20), (1, 6), (2, 4), (0, 0), (1, 40), (0, 9)]:
        seqs.append(prompts[k] + word(n_sol))
        starts.append(len(prompts[k]))
    kw = dict(batch_size=2, pad_id=tok.pad_token_id, max_len=48)
    plain = ver.score_sequences(seqs, starts, **kw)
    calls = []
    ver.register_forward_hook(lambda *a: calls.append(1))
    shared = ver.score_sequences(seqs, starts, share_prompts=True, **kw)
    for (f0, v0), (f1, v1) in zip(plain, shared, strict=True):
        assert len(v0) == len(v1)
        np.testing.assert_allclose(v1, v0, rtol=1e-5, atol=1e-6)
        assert f1 == pytest.approx(f0, abs=1e-6)
    # Only the three rows without a shared prompt (empty solution, over max_len, a prompt seen once)
    # go through the plain forward, in two batches of 2.
    assert len(calls) == 2
    with pytest.raises(GsmvError, match="plain Verifier"):
        score_sequences(torch.nn.Sequential(ver), seqs, starts, share_prompts=True, **kw)


def test_score_sequences_truncates_from_the_left(tiny_llama_dir):
    ver, tok = build_verifier(tiny_llama_dir, head="token")
    ver.eval()
    seq = list(range(10, 30))
    final, vals = ver.score_sequences([seq], [5], batch_size=2, pad_id=0, max_len=8)[0]
    with torch.no_grad():
        v = ver(torch.tensor([seq[-8:]]), return_logits=False).values[0].numpy()
    assert len(vals) == 15 and np.isnan(vals[:7]).all()
    np.testing.assert_allclose(vals[7:], v, rtol=1e-5, atol=1e-6)
    assert final == pytest.approx(float(v[-1]), abs=1e-6)


def test_prompt_ids_is_the_formatted_question(tiny_tokenizer):
    ids = prompt_ids(tiny_tokenizer, "How many?")
    assert tiny_tokenizer.decode(ids) == "How many?\n"


def test_load_verifier_rejects_a_plain_model_folder(tiny_llama_dir):
    with pytest.raises(GsmvError, match="not a verifier folder"):
        load_verifier(tiny_llama_dir)


def test_unknown_head_and_bad_token_id(tiny_llama_dir):
    from gsmv.models.loading import load_model_and_tokenizer

    lm, _ = load_model_and_tokenizer(tiny_llama_dir)
    with pytest.raises(GsmvError, match="valid heads"):
        Verifier(lm, head="mlp")
    with pytest.raises(GsmvError, match="value token id"):
        Verifier(lm, head="token", value_token_id=10**6)


def test_a_verifier_folder_whose_tokenizer_is_missing_or_swapped_is_one_line(tiny_llama_dir, tiny_gpt2_dir, tmp_path):
    import shutil

    ver, _ = build_verifier(tiny_llama_dir)
    ver.reads = "text"
    ver.save_pretrained(tmp_path / "v")
    assert load_verifier(tmp_path / "v")[0].reads == "text"  # what it reads survives the round trip
    swapped = tmp_path / "swapped"
    shutil.copytree(tmp_path / "v", swapped)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (swapped / name).unlink()
        if (tiny_gpt2_dir / name).exists():
            shutil.copy(tiny_gpt2_dir / name, swapped / name)
    for f in ("vocab.json", "merges.txt"):
        if (tiny_gpt2_dir / f).exists():
            shutil.copy(tiny_gpt2_dir / f, swapped / f)
    # A larger vocabulary than the LM's rows is refused by the model loader itself (issue 47), before the
    # verifier's own fingerprint check.
    with pytest.raises(GsmvError, match="tokenizer differs from the one the verifier was trained with|it is "
                                        "another model's tokenizer") as e:
        load_verifier(swapped)
    assert "\n" not in str(e.value)
    missing = tmp_path / "missing"
    shutil.copytree(tmp_path / "v", missing)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (missing / name).unlink()
    with pytest.raises(GsmvError, match="tokenizer") as e:
        load_verifier(missing)
    assert "\n" not in str(e.value)
