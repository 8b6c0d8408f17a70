"""HFSampler: equality with HF generate, the fast path's numerics, seeding, sampling law, batching."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sampling_helpers import QUESTIONS, by_key, hf_greedy, lively, requests
from torch import nn
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from gsmv.data.gsm8k import format_prompt
from gsmv.sampling.base import Request, SamplingParams, choose_tokens, request_seed, uniform_noise
from gsmv.sampling.hf import GenericEngine, HFSampler, LlamaEngine

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=40, calculator=False)


def test_greedy_equals_hf_generate_llama_fast_path(tiny_llama):
    model, tok = tiny_llama
    reqs = requests(tok)
    sampler = HFSampler(model, tok, GREEDY, batch_size=3)
    assert sampler.fast
    got = by_key(sampler.generate(reqs))
    want = hf_greedy(model, tok, reqs, GREEDY.max_new_tokens)
    assert {k: s.tokens for k, s in got.items()} == want
    assert len({tuple(t) for t in want.values()}) > 1  # the model is lively enough to tell prompts apart


def test_greedy_equals_hf_generate_grouped_query_attention(tiny_tokenizer):
    tok = tiny_tokenizer
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    model = lively(LlamaForCausalLM(cfg))
    reqs = requests(tok)
    got = by_key(HFSampler(model, tok, GREEDY, batch_size=4, fast=True).generate(reqs))
    assert {k: s.tokens for k, s in got.items()} == hf_greedy(model, tok, reqs, GREEDY.max_new_tokens)


def test_greedy_equals_hf_generate_gpt2_generic_path(tiny_gpt2):
    model, tok = tiny_gpt2
    reqs = requests(tok)
    sampler = HFSampler(model, tok, GREEDY, batch_size=3)
    assert not sampler.fast
    got = by_key(sampler.generate(reqs))
    assert {k: s.tokens for k, s in got.items()} == hf_greedy(model, tok, reqs, GREEDY.max_new_tokens)


def test_fast_engine_logits_equal_hf_forward(tiny_llama):
    """Teacher-forced decode through LlamaEngine (pages of 4 tokens, prompts shared or copied into
    the row's pages, rows joining, leaving and moving, the page pool growing) gives the logits of
    HF's full forward on the same text."""
    model, tok = tiny_llama
    prompts = [tuple(tok.encode(format_prompt(q))) for q in QUESTIONS[:3]]
    g = torch.Generator().manual_seed(0)
    engine = LlamaEngine(model, n_slots=4, max_new_tokens=8, page=4)
    pages_at_start = len(engine.pool.owner)
    rows: list[list[int]] = []  # full sequence fed so far per slot (prompt + fed tokens)
    plan = [(prompts[0], True), (prompts[1], False), (prompts[0], True), (prompts[2], False)]
    engine.prepare([p for p, _ in plan])
    for slot, (p, share) in enumerate(plan[:3]):
        engine.place(slot, p, share)
        rows.append(list(p))
    checked = 0
    with torch.inference_mode():
        for step in range(14):
            if step == 5:  # a new row joins, an old one leaves (the last row moves into its slot)
                engine.place(3, *plan[3])
                rows.append(list(plan[3][0]))
            if step == 9:
                engine.remove(0)
                rows[0] = rows.pop()
            feed = [r[-1] for r in rows]
            logits = engine.step(torch.tensor(feed))
            full = [model(torch.tensor([r])).logits[0, -1] for r in rows]
            torch.testing.assert_close(logits, torch.stack(full), atol=1e-4, rtol=1e-4)
            checked += len(rows)
            for r in rows:
                r.append(int(torch.randint(3, len(tok), (1,), generator=g)))
    assert checked > 40
    assert len(engine.pool.owner) > pages_at_start


def test_generic_and_fast_paths_give_the_same_samples(tiny_llama):
    model, tok = tiny_llama
    params = SamplingParams(temperature=0.8, top_p=0.9, max_new_tokens=32, calculator=True)
    reqs = requests(tok, n_problems=4, n=3)
    fast = by_key(HFSampler(model, tok, params, batch_size=3, fast=True).generate(reqs))
    generic = by_key(HFSampler(model, tok, params, batch_size=8, fast=False).generate(reqs))
    assert {k: s.tokens for k, s in fast.items()} == {k: s.tokens for k, s in generic.items()}
    # seeds differ per sample: the three samples of a problem are not all the same
    assert len({tuple(fast[("p0", j)].tokens) for j in range(3)}) > 1


def _with_frequent_eos(model, tok):
    """A copy whose generation config also stops at the token the model samples most, so rows
    finish after different numbers of tokens."""
    probe = HFSampler(model, tok, SamplingParams(temperature=1.0, max_new_tokens=16, calculator=False), batch_size=8)
    counts = np.bincount([t for s in probe.generate(requests(tok, 3, 2)) for t in s.tokens], minlength=len(tok))
    stop = int(counts.argmax())
    m = copy.deepcopy(model)
    m.generation_config.eos_token_id = [tok.eos_token_id, stop]
    return m, stop


@pytest.mark.parametrize("fast", [True, False])
def test_continuous_batching_more_requests_than_slots(tiny_llama, fast):
    model, tok = tiny_llama
    model, stop = _with_frequent_eos(model, tok)
    params = SamplingParams(temperature=1.0, max_new_tokens=24, calculator=True)
    reqs = requests(tok, n_problems=7, n=3)
    small = HFSampler(model, tok, params, batch_size=3, fast=fast)
    got = by_key(small.generate(reqs))
    assert sorted(got) == sorted((r.problem_id, r.sample_idx) for r in reqs)
    lengths = {s.n_tokens for s in got.values()}
    assert len(lengths) > 3  # rows really finished at different times
    for s in got.values():
        assert s.text == tok.decode(s.tokens)
        assert len(s.forced) == s.n_tokens <= params.max_new_tokens
        assert s.finished == (s.n_tokens < params.max_new_tokens)  # the stop token is never kept
        assert stop not in s.tokens and tok.eos_token_id not in s.tokens
    big = by_key(HFSampler(model, tok, params, batch_size=8, fast=fast).generate(reqs))
    assert {k: s.tokens for k, s in got.items()} == {k: s.tokens for k, s in big.items()}
    assert small.stats.samples == len(reqs) and small.stats.generated == sum(s.n_tokens for s in got.values())


def test_ignore_eos_decodes_exactly_max_new_tokens(tiny_llama):
    model, tok = tiny_llama
    model, _ = _with_frequent_eos(model, tok)
    params = SamplingParams(temperature=1.0, max_new_tokens=20, calculator=False, ignore_eos=True)
    out = list(HFSampler(model, tok, params, batch_size=4).generate(requests(tok, 3, 2)))
    assert [s.n_tokens for s in out] == [20] * 6


def test_one_token_prompt(tiny_llama, tiny_gpt2):
    for model, tok in (tiny_llama, tiny_gpt2):
        reqs = [Request("a", 0, (5,), 1), Request("b", 0, tuple(tok.encode("Two?\n")), 2)]
        got = by_key(HFSampler(model, tok, GREEDY, batch_size=2).generate(reqs))
        assert {k: s.tokens for k, s in got.items()} == hf_greedy(model, tok, reqs, GREEDY.max_new_tokens)


# ---------------------------------------------------------------- seeding and the sampling law


def test_request_seed_is_a_pure_function():
    a = request_seed(0, "test-00001", 3)
    assert a == request_seed(0, "test-00001", 3)
    others = {request_seed(0, "test-00001", 4), request_seed(1, "test-00001", 3), request_seed(0, "test-00002", 3)}
    assert a not in others and len(others) == 3
    assert 0 <= a < 2**63


def test_uniform_noise_is_counter_based():
    seeds = np.array([request_seed(0, "p", i) for i in range(4000)], dtype=np.uint64)
    u = uniform_noise(seeds, np.zeros(4000, dtype=np.int64))
    assert u.dtype == np.float32 and (u >= 0).all() and (u < 1).all()
    # the same (seed, step) pair gives the same number whatever else is in the batch
    assert uniform_noise(seeds[7:8], [0])[0] == u[7]
    assert uniform_noise(seeds[7:8], [1])[0] != u[7]
    assert abs(u.mean() - 0.5) < 0.02 and abs((u < 0.1).mean() - 0.1) < 0.02


def chi2_pvalue(counts: np.ndarray, probs: np.ndarray) -> float:
    keep = probs > 0
    expected = probs[keep] * counts.sum()
    stat = float(((counts[keep] - expected) ** 2 / expected).sum())
    dof = int(keep.sum()) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0, dtype=torch.float64),
                                         torch.tensor(stat / 2.0, dtype=torch.float64)))


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.5, 1.0), (0.7, 0.8)])
def test_sampled_frequencies_follow_softmax(temperature, top_p):
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0, 1.5])
    p = torch.softmax(logits / temperature, -1).numpy().astype(np.float64)
    if top_p < 1:
        order = np.argsort(-p, kind="stable")
        before = np.cumsum(p[order]) - p[order]
        p[order[before >= top_p]] = 0
        p /= p.sum()
    n = 20000
    seeds = np.array([request_seed(5, "q", i) for i in range(n)], dtype=np.uint64)
    u = torch.from_numpy(uniform_noise(seeds, np.full(n, 3)))
    tokens = choose_tokens(logits.expand(n, -1), u, temperature, top_p).numpy()
    counts = np.bincount(tokens, minlength=len(p)).astype(np.float64)
    assert counts[p == 0].sum() == 0  # top-p never samples a cut token
    # With a correct sampler this fails with probability 1e-6; a wrong temperature or a shifted
    # CDF gives p-values of ~1e-30 at this sample size.
    assert chi2_pvalue(counts, p) > 1e-6


def test_a_draw_on_the_cdfs_flat_tail_falls_back_to_the_mode():
    """x = u * total can round onto the CDF's flat tail (p = 0 tokens at the end); such a row takes the mode,
    the other rows keep their own draw."""
    logits = torch.tensor([[1.0, 3.0, 2.0, float("-inf")], [1.0, 3.0, 2.0, float("-inf")]])
    u = torch.tensor([1.0, 0.0])  # 1.0: x == the CDF's total, past every token with p > 0
    assert choose_tokens(logits, u, 0.7).tolist() == [1, 0]
    assert choose_tokens(logits[1:], u[1:], 0.7).tolist() == [0]


class FixedLM(nn.Module):
    """Always the same next-token logits, through the generic engine."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits
        self.dummy = nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(model_type="fixed")

    def get_output_embeddings(self) -> None:
        return None

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache: DynamicCache | None = None,
                use_cache=True, **kw):
        b, t = input_ids.shape
        k = torch.zeros(b, 1, t, 1)
        cache.update(k, k, 0)
        return SimpleNamespace(logits=self.logits.expand(b, t, -1))


def test_sampler_draws_follow_softmax_across_requests(tiny_tokenizer):
    """End to end: first tokens of many requests (one seed each) have the softmax(logits/T) law."""
    tok = tiny_tokenizer
    V = len(tok)
    logits = torch.full((V,), -1e4)
    ids = [t for t in range(3, V) if t != tok.eos_token_id][:6]
    logits[ids] = torch.tensor([1.0, 0.6, 0.2, 0.0, -0.4, -1.0])
    T = 0.7
    p = torch.softmax(logits / T, -1).numpy().astype(np.float64)
    reqs = [Request("q", i, (1, 2, 3), request_seed(9, "q", i)) for i in range(3000)]
    params = SamplingParams(temperature=T, max_new_tokens=1, calculator=False)
    out = list(HFSampler(FixedLM(logits), tok, params, batch_size=256).generate(reqs))
    counts = np.bincount([s.tokens[0] for s in out], minlength=V).astype(np.float64)
    assert counts.sum() == 3000
    assert chi2_pvalue(counts, p) > 1e-6


@pytest.mark.parametrize("fast", [True, False])
def test_a_request_list_smaller_than_the_batch_sizes_the_engine_to_it(tiny_llama, monkeypatch, fast):
    """A list of requests (a known count) gets an engine of that many slots, not batch_size (the Llama engine
    allocates its page pool by slots up front); a stream gets batch_size. The samples are the same."""
    model, tok = tiny_llama
    sampler = HFSampler(model, tok, SamplingParams(temperature=0.7, max_new_tokens=6), batch_size=512, fast=fast)
    made, engine = [], sampler._engine
    monkeypatch.setattr(sampler, "_engine", lambda slots: made.append(slots) or engine(slots))
    reqs = [Request("q", j, tuple(tok.encode("Tom has 3 apples.\n")), request_seed(0, "q", j)) for j in range(3)]
    listed = {s.sample_idx: s.tokens for s in sampler.generate(reqs)}
    streamed = {s.sample_idx: s.tokens for s in sampler.generate(iter(reqs))}
    assert made == [3, 512]
    assert listed == streamed and len(listed) == 3


def test_engines_report_their_batch_size(tiny_llama, tiny_gpt2):
    for (model, _tok), cls in ((tiny_llama, LlamaEngine), (tiny_gpt2, GenericEngine)):
        engine = cls(model, 2, 8) if cls is LlamaEngine else cls(model, 2)
        assert engine.n == 0


@pytest.mark.parametrize("family", ["qwen2", "mistral", "llama-biases-linear-rope"])
def test_fast_engine_other_llama_families(family):
    """Qwen2 (q/k/v biases), Mistral, Llama with every bias and scaled RoPE: same logits as HF."""
    from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

    common = dict(vocab_size=100, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256)
    torch.manual_seed(0)
    if family == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    elif family == "mistral":
        model = MistralForCausalLM(MistralConfig(sliding_window=None, **common))
    else:
        model = LlamaForCausalLM(LlamaConfig(attention_bias=True, mlp_bias=True, **common, rope_parameters={
            "rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}))
    model = lively(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.3)
    engine = LlamaEngine(model, n_slots=2, max_new_tokens=16, page=4)
    prompts = [(5, 6, 7, 8, 9), (10, 11, 12)]
    engine.prepare(prompts)
    rows = []
    for slot, p in enumerate(prompts):
        engine.place(slot, p)
        rows.append(list(p))
    with torch.inference_mode():
        for _ in range(9):
            logits = engine.step(torch.tensor([r[-1] for r in rows]))
            full = torch.stack([model(torch.tensor([r])).logits[0, -1] for r in rows])
            torch.testing.assert_close(logits, full, atol=1e-4, rtol=1e-4)
            for i, r in enumerate(rows):
                r.append(int(logits[i].argmax()))


@pytest.mark.parametrize("fast", [True, False])
def test_stop_at_newline_ends_a_sample_at_its_first_step(tiny_llama, fast):
    # Step-level search (gsmv.search) samples one line at a time. Noise is per (seed, token index), so a
    # step-mode sample is exactly the full sample cut after its first newline token.
    model, tok = tiny_llama
    nl = tok.encode("\n", add_special_tokens=False)[-1]
    probe = HFSampler(model, tok, SamplingParams(temperature=1.0, max_new_tokens=16, calculator=False), batch_size=8)
    counts = np.bincount([t for s in probe.generate(requests(tok, 3, 2)) for t in s.tokens], minlength=len(tok))
    m = copy.deepcopy(model)
    with torch.no_grad():  # give the newline the logits of the most sampled token, so steps end often
        m.get_output_embeddings().weight[nl] = m.get_output_embeddings().weight[int(counts.argmax())]
    params = SamplingParams(temperature=1.0, max_new_tokens=24, calculator=True)
    reqs = requests(tok, n_problems=5, n=3)
    full = by_key(HFSampler(m, tok, params, batch_size=4, fast=fast).generate(reqs))
    step_params = SamplingParams(temperature=1.0, max_new_tokens=24, calculator=True, stop_at_newline=True)
    steps = by_key(HFSampler(m, tok, step_params, batch_size=4, fast=fast).generate(reqs))
    cut = 0
    for k, s in full.items():
        ends = [i for i, t in enumerate(s.tokens) if "\n" in tok.decode([t]) and not s.forced[i]]
        if ends:
            cut += 1
            assert steps[k].tokens == s.tokens[:ends[0] + 1] and not steps[k].finished
        else:
            assert steps[k].tokens == s.tokens and steps[k].finished == s.finished
    assert 0 < cut < len(full)  # both cases happened
