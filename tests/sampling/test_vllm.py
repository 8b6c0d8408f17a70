"""The vLLM backend's stop-and-resume calculator, on a fake engine with vLLM's generate semantics."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from sampling_helpers import FakeLLM, FakeParams, ScriptedLM, script_policy

from gsmv.sampling.base import Request, SamplingParams
from gsmv.sampling.hf import HFSampler
from gsmv.sampling.vllm import STOP, VLLMSampler, round_seed

PROMPT = "Raj has 5 boxes with 3 coins in each. How many coins are there?\n"


def enc(tok, text):
    return tok.encode(text, add_special_tokens=False)


def setup(tok, texts_or_ids: dict[str, list[int]]):
    ids = {k: tuple(enc(tok, f"{k}: {PROMPT}")) for k in texts_or_ids}
    policy = script_policy({ids[k]: v for k, v in texts_or_ids.items()}, tok.eos_token_id)
    reqs = [Request(k, 0, ids[k], seed=100 + i, reference="15") for i, k in enumerate(texts_or_ids)]
    return policy, reqs, enc(tok, "\n")[-1]


def scripts(tok) -> dict[str, list[int]]:
    return {
        "forced": enc(tok, "There are 5*3 = <<5*3=") + [0, 0, 0] + enc(tok, "15 coins.\n#### 15"),
        "failed": enc(tok, "It is 5/0 = <<5/0=7>>7.\n#### 7"),
        "two": enc(tok, "So 13+20 = <<13+20=") + [0] * 3 + enc(tok, "33. 33-3 = <<33-3=") + [0] * 3
        + enc(tok, "30.\n#### 30"),
        "cut": enc(tok, "There are 5*3 = <<5*3=") + [0] * 9,
        "plain": enc(tok, "No sums here.\n#### 15"),
    }


@pytest.mark.parametrize("max_new_tokens", [64, 20])
def test_same_records_as_the_hf_sampler(tiny_tokenizer, max_new_tokens):
    """Forced results, failures, several annotations, cuts at max tokens: identical Sample records."""
    tok = tiny_tokenizer
    policy, reqs, newline = setup(tok, scripts(tok))
    params = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, calculator=True)
    engine = FakeLLM(tok, policy, newline)
    got = {s.problem_id: s for s in VLLMSampler(engine, tok, params, FakeParams).generate(reqs)}
    want = {s.problem_id: s for s in HFSampler(ScriptedLM(len(tok), policy, newline), tok, params,
                                               batch_size=2).generate(reqs)}
    assert got == want
    assert got["forced"].calc_calls == 1 or max_new_tokens < 30
    if max_new_tokens == 64:
        assert got["two"].text == "So 13+20 = <<13+20=33>>33. 33-3 = <<33-3=30>>30.\n#### 30"
        assert got["failed"].calc_calls == 0 and got["failed"].final_answer == "7"
        assert got["plain"].finished and got["cut"].finished
    else:
        assert not got["two"].finished and got["two"].n_tokens == 20


def test_rounds_resume_with_prompt_plus_forced_tokens(tiny_tokenizer):
    tok = tiny_tokenizer
    policy, reqs, newline = setup(tok, {"forced": scripts(tok)["forced"]})
    engine = FakeLLM(tok, policy, newline)
    params = SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=64, calculator=True)
    [s] = VLLMSampler(engine, tok, params, FakeParams).generate(reqs)
    # round 1 stops at the `=` of "5*3 = " (outside the annotation: a plain resume), round 2 at the
    # annotation's `=`, round 3 runs to EOS after the forced "15>>"
    assert len(engine.calls) == 3
    (p1, sp1), (p2, sp2), (p3, sp3) = engine.calls
    prompt = list(reqs[0].prompt_ids)
    head = enc(tok, "There are 5*3 =")
    assert p2[0] == prompt + head
    assert p3[0] == prompt + enc(tok, "There are 5*3 = <<5*3=15>>")
    assert sp1[0].stop == [STOP] and sp1[0].include_stop_str_in_output
    assert [sp[0].seed for sp in (sp1, sp2, sp3)] == [round_seed(reqs[0].seed, r) for r in range(3)]
    assert len({sp[0].seed for sp in (sp1, sp2, sp3)}) == 3
    assert sp2[0].max_tokens == 64 - len(head) and sp1[0].temperature == 0.7 and sp1[0].top_p == 0.9
    assert s.text == "There are 5*3 = <<5*3=15>>15 coins.\n#### 15" and s.is_correct


def test_calculator_off_is_one_round(tiny_tokenizer):
    tok = tiny_tokenizer
    policy, reqs, newline = setup(tok, scripts(tok))
    engine = FakeLLM(tok, policy, newline)
    out = list(VLLMSampler(engine, tok, SamplingParams(temperature=0.0, calculator=False), FakeParams).generate(reqs))
    assert len(engine.calls) == 1 and not engine.calls[0][1][0].stop
    assert all(s.calc_calls == 0 and not any(s.forced) for s in out)


def test_merged_equals_tokens(merging_tokenizer):
    """A token carrying `=` and more ("=3") stops the round mid-token; it is replaced as in the HF sampler."""
    tok = merging_tokenizer
    eq3 = tok.convert_tokens_to_ids("=3")
    script = enc(tok, "So <<5*3") + [eq3] + enc(tok, " coins.\n#### 15")
    policy, reqs, newline = setup(tok, {"bad": script})
    params = SamplingParams(temperature=0.0, max_new_tokens=40)
    [s] = VLLMSampler(FakeLLM(tok, policy, newline), tok, params, FakeParams).generate(reqs)
    [h] = HFSampler(ScriptedLM(len(tok), policy, newline), tok, params).generate(reqs)
    assert s == h and s.text.startswith("So <<5*3=15>>")


def test_missing_vllm_is_a_clear_error(monkeypatch, tmp_path):
    import builtins

    from gsmv.errors import GsmvError

    real_import = builtins.__import__

    def no_vllm(name, *a, **k):
        if name == "vllm":
            raise ImportError("no vllm")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    with pytest.raises(GsmvError, match=r"gsmv\[vllm\]"):
        VLLMSampler.from_pretrained(str(tmp_path), SamplingParams())


def test_one_engine_is_reused_across_sample_stages(monkeypatch, tmp_path, tiny_tokenizer):
    import sys
    import types

    from gsmv.sampling import vllm as gv

    built = []

    class FakeLLM:
        def __init__(self, **kw):
            built.append(kw)

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=FakeLLM, SamplingParams=dict))
    monkeypatch.setattr(gv, "_ENGINES", {})
    tiny_tokenizer.save_pretrained(tmp_path / "a")
    tiny_tokenizer.save_pretrained(tmp_path / "b")
    s1 = VLLMSampler.from_pretrained(str(tmp_path / "a"), SamplingParams(temperature=0.7))
    s2 = VLLMSampler.from_pretrained(str(tmp_path / "a"), SamplingParams(temperature=0.0))  # greedy stage
    assert s1.engine is s2.engine and len(built) == 1
    s3 = VLLMSampler.from_pretrained(str(tmp_path / "b"), SamplingParams())  # another model: a new engine
    assert s3.engine is not s1.engine and len(built) == 2 and len(gv._ENGINES) == 1



def test_the_engine_is_freed_before_a_stage_that_does_not_sample(monkeypatch, tmp_path, tiny_data_dir):
    from gsmv import pipeline
    from gsmv.config import load_config
    from gsmv.sampling import vllm as gv

    monkeypatch.setattr(gv, "_ENGINES", {("a",): object()})
    pipeline._free_samplers_unless_sampling("sample-test")  # the next sample stage reuses it
    assert len(gv._ENGINES) == 1
    seen = []
    monkeypatch.setattr("gsmv.train.finetune.main", lambda c: seen.append(len(gv._ENGINES)))
    cfg = load_config("smoke", [f"data.dir={tiny_data_dir}", f"out_dir={tmp_path}"])
    pipeline.run(cfg, until="finetune", log=lambda _: None)
    assert seen == [0]  # training started with the engine (and its GPU memory) gone


def test_each_rank_gets_its_own_engine_on_its_device(monkeypatch, tmp_path, tiny_tokenizer):
    # Data-parallel sampling under torchrun: the external-launcher executor (one worker in this process, on
    # LOCAL_RANK's GPU) instead of vLLM's default, which would stack every rank's engine on GPU 0.
    import sys
    import types

    from gsmv.sampling import vllm as gv

    built = []
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=lambda **kw: built.append(kw),
                                                                   SamplingParams=dict))
    monkeypatch.setattr(gv, "_ENGINES", {})
    tiny_tokenizer.save_pretrained(tmp_path / "a")
    monkeypatch.setenv("WORLD_SIZE", "1")
    VLLMSampler.from_pretrained(str(tmp_path / "a"), SamplingParams())
    assert "distributed_executor_backend" not in built[-1]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    VLLMSampler.from_pretrained(str(tmp_path / "a"), SamplingParams())
    assert built[-1]["distributed_executor_backend"] == "external_launcher"


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None or not torch.cuda.is_available(),
                    reason="needs vLLM and a CUDA GPU")
def test_real_vllm_greedy_matches_hf(tmp_path, tiny_tokenizer):
    from sampling_helpers import lively
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    model = lively(LlamaForCausalLM(cfg))
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    params = SamplingParams(temperature=0.0, max_new_tokens=24, calculator=True)
    reqs = [Request(f"p{i}", 0, tuple(enc(tok, f"{i}: {PROMPT}")), seed=i) for i in range(4)]
    got = {s.problem_id: s.tokens for s in VLLMSampler.from_pretrained(
        str(tmp_path), params, dtype="float32", gpu_memory_utilization=0.3).generate(reqs)}
    want = {s.problem_id: s.tokens for s in HFSampler(model.cuda(), tok, params).generate(reqs)}
    # float32 on both; allow a rare near-tie flip late in a sequence but not wholesale disagreement
    same = sum(got[k][:8] == want[k][:8] for k in got)
    assert same >= 3


def test_stop_at_newline_same_records_as_the_hf_sampler(tiny_tokenizer):
    """One solution step per request (step-level search): both backends stop after the newline token."""
    tok = tiny_tokenizer
    policy, reqs, newline = setup(tok, scripts(tok))
    params = SamplingParams(temperature=0.0, max_new_tokens=64, calculator=True, stop_at_newline=True)
    got = {s.problem_id: s for s in VLLMSampler(FakeLLM(tok, policy, newline), tok, params, FakeParams).generate(reqs)}
    want = {s.problem_id: s for s in HFSampler(ScriptedLM(len(tok), policy, newline), tok, params,
                                               batch_size=2).generate(reqs)}
    assert got == want
    assert got["forced"].text == "There are 5*3 = <<5*3=15>>15 coins.\n" and not got["forced"].finished
    assert got["forced"].calc_calls == 1 and got["plain"].text == "No sums here.\n"
