"""Shared-prompt packing: the packed layout's losses and gradients equal the plain layout's."""

from __future__ import annotations

import random

import pytest
import torch

from gsmv.config import VerifierConfig
from gsmv.models.verifier import build_verifier
from gsmv.train import verifier as tv
from gsmv.train.packing import packed_collate, piece_length, plain_collate, plan_rows


def _examples(level: str, process: bool, max_len: int = 40) -> list[dict]:
    """Three problems' samples (shared prompts), a sample cut by max_len, an empty solution, reference LM examples."""
    rng = random.Random(0)
    prompts = [[rng.randrange(5, 250) for _ in range(n)] for n in (9, 14, 6)]
    out = []
    for g, prompt in enumerate(prompts):
        for k in range(5):
            sol = [rng.randrange(5, 250) for _ in range(rng.randrange(1, 12))]
            label = float(rng.random() < 0.5)
            wrong = rng.randrange(len(sol)) if process and label else None
            ex, _ = tv.make_example(prompt, sol, label, max_len=max_len, level=level, lm=k % 2 == 0, wrong_from=wrong)
            out.append(ex | {"group": g, "outcome": int(label)})
        out.append(tv.make_lm_example(prompt, [rng.randrange(5, 250) for _ in range(7)], max_len=max_len))
    long_sol = [rng.randrange(5, 250) for _ in range(35)]
    ex, cut = tv.make_example(prompts[1], long_sol, 1.0, max_len=max_len, level=level)
    assert cut
    out.append(ex | {"group": 1, "outcome": 1})
    ex, _ = tv.make_example(prompts[0], [], 0.0, max_len=max_len, level=level)
    out.append(ex | {"group": 0, "outcome": 0})
    rng.shuffle(out)
    return out


def _loss_and_grads(ver, batch, vcfg):
    ver.zero_grad(set_to_none=True)
    loss, stats = tv.make_loss_fn(vcfg)(ver, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in ver.named_parameters() if p.grad is not None}
    return loss.detach(), stats, grads


def _assert_layouts_agree(ver, tok, examples, vcfg, budget, loss_abs=1e-5):
    """Loss and every gradient of the packed layout equal the plain layout's; returns both batches' stats."""
    l0, s0, g0 = _loss_and_grads(ver, plain_collate(tok.pad_token_id)(examples), vcfg)
    l1, s1, g1 = _loss_and_grads(ver, packed_collate(tok.pad_token_id, budget)(examples), vcfg)
    assert l1.item() == pytest.approx(l0.item(), abs=loss_abs)
    assert g0.keys() == g1.keys()
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], atol=1e-5, rtol=1e-4, msg=name)
    return s0, s1


@pytest.mark.parametrize("head", ["token", "linear"])
@pytest.mark.parametrize("level,process", [("token", False), ("solution", False), ("token", True)])
@pytest.mark.parametrize("budget", [24, 60, 4096])
def test_packed_loss_and_gradients_equal_the_plain_layout(tiny_llama_dir, head, level, process, budget):
    ver, tok = build_verifier(tiny_llama_dir, head=head)
    ver.train()  # dropout is 0 in the tiny model: train mode, same arithmetic
    if head == "linear":  # a zero head would give the trunk no value gradient to compare
        torch.manual_seed(1)
        torch.nn.init.normal_(ver.linear.weight, std=0.1)
    vcfg = VerifierConfig(lm_weight=0.7, rank_weight=0.5, loss="mse")
    examples = _examples(level, process)
    plain = plain_collate(tok.pad_token_id)(examples)
    packed = packed_collate(tok.pad_token_id, budget)(examples)
    assert packed["n_tokens"] < plain["attention_mask"].sum() or budget < 40  # questions read once
    s0, s1 = _assert_layouts_agree(ver, tok, examples, vcfg, budget)
    assert s0["rank_pairs"] == s1["rank_pairs"] > 0 and s0["tokens"] == s1["tokens"]
    for key in ("value_loss", "lm_loss", "rank_loss"):
        assert s1[key] == pytest.approx(s0[key], abs=1e-5), key


def test_bce_loss_is_layout_independent(tiny_llama_dir):
    ver, tok = build_verifier(tiny_llama_dir)
    vcfg = VerifierConfig(lm_weight=0.0, loss="bce")
    _assert_layouts_agree(ver, tok, _examples("token", False), vcfg, 64, loss_abs=1e-6)


def test_rows_fit_the_budget_and_hold_every_example_once():
    examples = _examples("token", False)
    rows = plan_rows(examples, 30)
    seen = sorted(i for row in rows for _, members in row for i in members)
    assert seen == list(range(len(examples)))
    for row in rows:
        length = sum(piece_length(examples, members) for _, members in row)
        assert length <= 30 or (len(row) == 1 and len(row[0][1]) == 1)  # an example over budget: alone
        for first, members in row:  # one prompt per block
            p = examples[first]["prompt_len"]
            assert {tuple(examples[i]["input_ids"][:p]) for i in members} == {tuple(examples[first]["input_ids"][:p])}


def test_a_block_reads_its_prompt_once():
    prompt, sols = [7, 8, 9, 10], [[11, 12], [13], [14, 15, 16]]
    examples = [tv.make_example(prompt, s, 1.0, max_len=64, level="token")[0] for s in sols]
    b = packed_collate(0, 64)(examples)
    assert b["input_ids"].tolist() == [prompt + [11, 12, 13, 14, 15, 16]]
    assert b["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 4, 4, 5, 6]]
    allowed = (b["attention_mask"][0, 0] == 0).int()
    assert allowed[6].tolist() == [1, 1, 1, 1, 0, 0, 1, 0, 0, 0]  # the second sample: prompt and itself
    assert allowed[9].tolist() == [1, 1, 1, 1, 0, 0, 0, 1, 1, 1]
    assert b["value_idx"].tolist() == [4, 5, 6, 7, 8, 9]
    assert b["lm_src"].tolist() == [3, 4, 3, 3, 7, 8] and b["lm_tgt"].tolist() == [11, 12, 13, 14, 15, 16]


def test_batch_groups_chunk_a_problems_samples():
    vcfg = VerifierConfig(group_samples=2)
    groups = tv.batch_groups([0, 0, 0, 1, -1, 1, 0], vcfg)
    assert groups[0] == groups[1] != groups[2] == groups[6] and groups[3] == groups[5] and groups[4] == -1
    assert tv.batch_groups([0, 1, -1], VerifierConfig()) is None
    assert tv.batch_groups([0, 1, -1], VerifierConfig(rank_weight=1.0)) == [0, 1, -1]


def test_packing_equals_the_plain_layout_on_gpt2(tiny_gpt2_dir):
    ver, tok = build_verifier(tiny_gpt2_dir)
    vcfg = VerifierConfig(lm_weight=1.0, loss="mse")
    _assert_layouts_agree(ver, tok, _examples("token", False), vcfg, 60)
