"""The Llama fast engine on SmolLM2-shaped models: tied embeddings, grouped-query attention (3 query heads per
KV head), head size 64, RoPE base 100000. Samples must equal the HF reference path's (issue 45): greedy against
HF `generate`, sampled (calculator on, several samples sharing a prompt) against the generic engine, which runs
the model's own forward. The last test does the same on the real SmolLM2-135M when it is already converted."""

from __future__ import annotations

import copy

import pytest
import torch
from sampling_helpers import QUESTIONS, by_key, hf_greedy, lively, requests
from transformers import LlamaConfig, LlamaForCausalLM

from gsmv.data.gsm8k import format_prompt
from gsmv.sampling.base import Request, SamplingParams, request_seed
from gsmv.sampling.hf import HFSampler, LlamaEngine


@pytest.fixture(scope="module")
def tiny_smol(tiny_tokenizer):
    """SmolLM2-135M's shape scaled down: 9 heads / 3 KV heads of 64 → 6 / 2 of 64, MLP 8/3 of hidden, 2 layers."""
    tok = tiny_tokenizer
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=384, intermediate_size=1024, num_hidden_layers=2,
                      num_attention_heads=6, num_key_value_heads=2, head_dim=64, rope_theta=100000.0,
                      rms_norm_eps=1e-5, tie_word_embeddings=True, max_position_embeddings=512,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id, bos_token_id=None)
    model = lively(LlamaForCausalLM(cfg))
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied, as in SmolLM2
    return model, tok


def annotating(model, tok, boost: float = 80.0):
    """A copy that writes `<<`, digits, `*`, `+` and `=` most of the time, so the calculator fires.

    A random model almost never writes `<<expr=`, and then a calculator test checks nothing. With tied
    embeddings the logit of token t is h · E[t]: adding boost · m / |m|² to those rows of E (m: the mean final
    hidden state on a prompt) raises their logits by about `boost` wherever h points like m."""
    m2 = copy.deepcopy(model)
    ids = [tok.convert_tokens_to_ids(t) for t in ["<<", "Ġ<<", "=", "*", "+", *"0123456789"]]
    with torch.no_grad():
        h = m2.model(torch.tensor([tok.encode(format_prompt(QUESTIONS[1]))])).last_hidden_state[0]
        m = h.mean(0)
        m2.model.embed_tokens.weight[ids] += boost * m / m.norm() ** 2
    return m2


def test_smol_shaped_logits_equal_hf_forward(tiny_smol):
    """Teacher-forced decode (one row sharing its prompt, one holding it in its own pages): HF's logits."""
    model, tok = tiny_smol
    prompts = [tuple(tok.encode(format_prompt(q))) for q in QUESTIONS[:2]]
    engine = LlamaEngine(model, n_slots=2, max_new_tokens=16, page=4)
    engine.prepare(prompts)
    rows = []
    for slot, p in enumerate(prompts):
        engine.place(slot, p, share=slot == 0)
        rows.append(list(p))
    with torch.inference_mode():
        for _ in range(10):
            logits = engine.step(torch.tensor([r[-1] for r in rows]))
            full = torch.stack([model(torch.tensor([r])).logits[0, -1] for r in rows])
            torch.testing.assert_close(logits, full, atol=1e-4, rtol=1e-4)
            for i, r in enumerate(rows):
                r.append(int(logits[i].argmax()))


def test_smol_shaped_greedy_equals_hf_generate(tiny_smol):
    model, tok = tiny_smol
    reqs = requests(tok)
    params = SamplingParams(temperature=0.0, max_new_tokens=40, calculator=False)
    sampler = HFSampler(model, tok, params, batch_size=3)  # fewer slots than requests: rows join and leave
    assert sampler.fast
    got = by_key(sampler.generate(reqs))
    want = hf_greedy(model, tok, reqs, params.max_new_tokens)
    assert {k: s.tokens for k, s in got.items()} == want
    assert len({tuple(t) for t in want.values()}) > 1  # lively enough to tell prompts apart


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_smol_shaped_fast_equals_generic_with_calculator(tiny_smol, temperature):
    """Three samples a prompt (the fast engine shares the prompt's cache), the calculator forcing results into
    rows, 5 slots for 15 requests; greedy too (the sample stage's test_greedy split)."""
    model, tok = tiny_smol
    model = annotating(model, tok)
    params = SamplingParams(temperature=temperature, max_new_tokens=48, calculator=True)
    reqs = requests(tok, n_problems=5, n=3)
    fast_sampler = HFSampler(model, tok, params, batch_size=5, fast=True)
    fast = by_key(fast_sampler.generate(reqs))
    generic = by_key(HFSampler(model, tok, params, batch_size=8, fast=False).generate(reqs))
    assert {k: (s.tokens, s.forced) for k, s in fast.items()} == {k: (s.tokens, s.forced) for k, s in generic.items()}
    assert sum(s.calc_calls for s in fast.values()) > 0  # the calculator really wrote into some rows
    assert fast_sampler.stats.prefill_tokens < sum(len(r.prompt_ids) for r in reqs)  # prompts prefilled once
    if temperature > 0:
        assert len({tuple(fast[("p0", j)].tokens) for j in range(3)}) > 1  # one seed per sample


# ---------------------------------------------------------------- the real SmolLM2-135M


def cached_smollm2():
    """The converted SmolLM2-135M folder when gsmv.models.sources has it already, else None: never downloads
    or converts (resolve_model would)."""
    from gsmv.models.sources import ALIASES, PACKAGED, SOURCE_META, converted_folder

    folder = converted_folder(PACKAGED[ALIASES["smollm2-135m"]])
    return folder if (folder / SOURCE_META).is_file() else None


@pytest.mark.slow
def test_real_smollm2_fast_engine_equals_reference_paths():
    """2 synth test problems × 2 samples, 48 new tokens: sampled (T=0.7, calculator on) fast == generic, and
    greedy fast == HF generate."""
    folder = cached_smollm2()
    if folder is None:
        pytest.skip("SmolLM2-135M is not in gsmv's model cache (gsmv run with model.name=smollm2-135m converts it)")
    from gsmv.config import load_config
    from gsmv.data.tasks import load_split
    from gsmv.models.loading import load_model_and_tokenizer
    from gsmv.models.tokenizer import encode_prompt

    model, tok = load_model_and_tokenizer(folder, dtype=torch.float32, device="cpu")
    problems = load_split(load_config("synth"), "test")[:2]
    reqs = [Request(p.id, j, tuple(encode_prompt(tok, format_prompt(p.question))), request_seed(0, p.id, j), p.answer)
            for p in problems for j in range(2)]
    params = SamplingParams(temperature=0.7, max_new_tokens=48, calculator=True)
    fast_sampler = HFSampler(model, tok, params, batch_size=4)
    assert fast_sampler.fast
    fast = by_key(fast_sampler.generate(reqs))
    generic = by_key(HFSampler(model, tok, params, batch_size=4, fast=False).generate(reqs))
    assert {k: s.tokens for k, s in fast.items()} == {k: s.tokens for k, s in generic.items()}
    greedy_reqs = [r for r in reqs if r.sample_idx == 0]
    greedy = SamplingParams(temperature=0.0, max_new_tokens=48, calculator=False)
    got = by_key(HFSampler(model, tok, greedy, batch_size=2).generate(greedy_reqs))
    assert {k: s.tokens for k, s in got.items()} == hf_greedy(model, tok, greedy_reqs, greedy.max_new_tokens)
