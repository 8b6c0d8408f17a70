"""sequence_loglik: the log-probability a causal LM gives a solution, as a ranking score."""

from __future__ import annotations

import random

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from gsmv.models.likelihood import sequence_loglik


def _reference(model, seq: list[int], start: int) -> np.ndarray:
    """Token by token, one sequence alone (no padding): log p(seq[t] | seq[:t]) for t >= start."""
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([seq])).logits[0].float(), -1)
    return np.array([float(logp[t - 1, seq[t]]) for t in range(start, len(seq))])


def test_sum_and_mean_match_a_token_by_token_computation_in_padded_batches(tiny_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    rng = random.Random(0)
    seqs = [[rng.randrange(5, 250) for _ in range(rng.randrange(6, 20))] for _ in range(7)]
    starts = [rng.randrange(1, 5) for _ in seqs]
    got = sequence_loglik(model, seqs, starts, pad_id=0, batch_size=3)
    for (s, m), seq, st in zip(got, seqs, starts, strict=True):
        ref = _reference(model, seq, st)
        assert s == np.float64(s) and abs(s - ref.sum()) < 1e-4 and abs(m - ref.mean()) < 1e-5
    # keep drops positions (calculator-forced tokens); all-False keeps everything
    keep = [[k % 2 == 0 for k in range(len(seq) - st)] for seq, st in zip(seqs, starts, strict=True)]
    kept = sequence_loglik(model, seqs, starts, pad_id=0, keep=keep)
    ref = _reference(model, seqs[0], starts[0])[np.array(keep[0])]
    assert abs(kept[0, 0] - ref.sum()) < 1e-4 and abs(kept[0, 1] - ref.mean()) < 1e-5
    none = sequence_loglik(model, seqs[:1], starts[:1], pad_id=0, keep=[[False] * (len(seqs[0]) - starts[0])])
    assert abs(none[0, 0] - got[0, 0]) < 1e-4


def test_max_len_keeps_the_last_tokens_and_counts_only_what_is_left(tiny_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    seq, start = list(range(10, 40)), 5
    got = sequence_loglik(model, [seq], [start], pad_id=0, max_len=12)
    ref = _reference(model, seq[-12:], 1)  # the cut sequence's own tokens after its first
    assert abs(got[0, 0] - ref.sum()) < 1e-4 and abs(got[0, 1] - ref.mean()) < 1e-5
