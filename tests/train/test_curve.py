"""The memorisation test: a tiny verifier learns to order the samples it trained on, within each problem."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from gsmv.config import VerifierConfig
from gsmv.models.verifier import build_verifier
from gsmv.train import verifier as tv
from gsmv.train.curve import ProbeSet, train_curve


def _rows(n_problems: int, per_problem: int) -> list[dict]:
    """Random prompts and samples; each problem's labels are half right, half wrong, at random: nothing but
    the samples themselves tells them apart, and the problem alone says nothing."""
    rng = random.Random(0)
    rows = []
    for q in range(n_problems):
        prompt = [rng.randrange(5, 250) for _ in range(8)]
        labels = [k < per_problem // 2 for k in range(per_problem)]
        rng.shuffle(labels)
        for k in range(per_problem):
            rows.append({"problem_id": f"p{q}", "prompt": prompt, "label": labels[k], "wrong_char": None,
                         "tokens": [rng.randrange(5, 250) for _ in range(rng.randrange(4, 9))]})
    return rows


@pytest.mark.parametrize("pack_tokens", [0, 256])
def test_a_tiny_verifier_memorises_the_within_problem_order_of_its_training_samples(tiny_llama_dir, pack_tokens):
    torch.manual_seed(0)
    ver, tok = build_verifier(tiny_llama_dir)
    rows = _rows(6, 6)
    vcfg = VerifierConfig(lr=1e-2, batch_size=12, lm_weight=0.0, schedule="constant", warmup_ratio=0.0,
                          group_samples=6, pack_tokens=pack_tokens)
    examples, n_value, _, _ = tv.build_examples(rows, None, vcfg, tok, max_len=64)
    collate = tv.collate_fn(tok.pad_token_id, vcfg.pack_tokens)
    tv.calibrate(ver, examples, collate, vcfg.batch_size)
    probe = ProbeSet.from_rows("fit", rows)
    recs = train_curve(ver, examples, vcfg=vcfg, collate=collate, loss_fn=tv.make_loss_fn(vcfg), steps=150,
                       eval_every=50, probes=[probe], max_len=64,
                       groups=tv.batch_groups([ex["group"] for ex in examples], vcfg))
    assert [r["step"] for r in recs] == [0, 50, 100, 150]
    assert recs[-1]["examples"] == recs[-1]["value_examples"] == 150 * 12
    assert recs[0]["fit_auc_within"] < 0.8  # an untrained verifier does not know the order
    assert recs[-1]["fit_auc_within"] >= 0.95, [r["fit_auc_within"] for r in recs]
    assert recs[-1]["fit_best_of_n"] == 1.0
    assert np.isfinite(recs[-1]["train_value_loss"])


def test_the_lm_probe_ranks_by_the_verifiers_own_likelihood_and_its_ratio_to_the_start(tiny_llama_dir):
    torch.manual_seed(0)
    ver, tok = build_verifier(tiny_llama_dir)
    rows = _rows(4, 6)
    # The LM loss on the right samples only (lm_data=samples, trained on those alone): their likelihood rises
    # against the wrong ones', so each LM-based ranking (sum, mean, ratio to the start) learns the order.
    vcfg = VerifierConfig(lr=1e-2, batch_size=12, lm_weight=1.0, lm_data="samples", schedule="constant",
                          warmup_ratio=0.0, pack_tokens=0)
    right = [r for r in rows if r["label"]]
    examples, n_value, _, _ = tv.build_examples(right, None, vcfg, tok, max_len=64)
    collate = tv.collate_fn(tok.pad_token_id, 0)
    probe = ProbeSet.from_rows("fit", rows)
    recs = train_curve(ver, examples, vcfg=vcfg, collate=collate, loss_fn=tv.make_loss_fn(vcfg), steps=60,
                       eval_every=30, probes=[probe], max_len=64, lm_probe=True)
    first, last = recs[0], recs[-1]
    assert first["fit_llr_auc_within"] == 0.5  # the start against itself: all ties
    for key in ("fit_lm_auc_within", "fit_lm_mean_auc_within", "fit_llr_auc_within"):
        assert last[key] >= 0.95, (key, [r[key] for r in recs])
    assert last["fit_lm_nll"] < first["fit_lm_nll"]
    # the last evaluation's scores stay on the probe set: the last model's values and likelihoods
    assert probe.values.shape == (len(rows),) and probe.loglik.shape == (len(rows), 2)
    assert -probe.loglik[probe.labels, 1].mean() == pytest.approx(last["fit_lm_nll"])
    plain = ProbeSet.from_rows("fit", rows)
    assert "fit_lm_auc_within" not in train_curve(ver, examples, vcfg=vcfg, collate=collate,
                                                   loss_fn=tv.make_loss_fn(vcfg), steps=1, eval_every=1,
                                                   probes=[plain], max_len=64)[0]
    assert plain.values.shape == (len(rows),) and plain.loglik is None


def test_the_curve_counts_value_examples_apart_from_lm_only_ones(tiny_llama_dir):
    torch.manual_seed(0)
    ver, tok = build_verifier(tiny_llama_dir)
    rows = _rows(4, 6)
    refs = [(f"p{q}", rows[6 * q]["prompt"], rows[6 * q]["tokens"]) for q in range(4)]
    vcfg = VerifierConfig(lr=1e-3, batch_size=12, lm_weight=1.0, lm_ratio=1.0, schedule="constant",
                          warmup_ratio=0.0, pack_tokens=0)
    examples, n_value, _, _ = tv.build_examples(rows, refs, vcfg, tok, max_len=64)
    assert (n_value, len(examples)) == (24, 48)
    recs = train_curve(ver, examples, vcfg=vcfg, collate=tv.collate_fn(tok.pad_token_id, 0),
                       loss_fn=tv.make_loss_fn(vcfg), steps=4, eval_every=4, probes=[], max_len=64)
    assert (recs[-1]["examples"], recs[-1]["value_examples"]) == (48, 24)  # one epoch: each example once
