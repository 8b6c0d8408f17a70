"""The calculator state machine of the HF sampler, on a scripted model (tests/sampling/conftest.py)."""

from __future__ import annotations

import pytest
from sampling_helpers import ScriptedLM, script_policy

from gsmv.sampling.base import Calculator, Request, SamplingParams
from gsmv.sampling.hf import HFSampler

PROMPT = "Raj has 5 boxes with 3 coins in each. How many coins are there?\n"


def enc(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def run(tok, scripts: dict[str, list[int]], *, max_new_tokens: int = 64, calculator: bool = True,
        temperature: float = 0.0, batch_size: int = 4, prompts: dict[str, str] | None = None):
    """Sample one request per script; returns {name: Sample}."""
    prompts = prompts or {name: f"{name}: {PROMPT}" for name in scripts}
    ids = {name: tuple(enc(tok, prompts[name])) for name in scripts}
    newline = enc(tok, "\n")[-1]
    model = ScriptedLM(len(tok), script_policy({ids[k]: v for k, v in scripts.items()}, tok.eos_token_id), newline)
    sampler = HFSampler(model, tok, SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens,
                                                   calculator=calculator), batch_size=batch_size)
    reqs = [Request(name, 0, ids[name], seed=i, reference="15") for i, name in enumerate(scripts)]
    return {s.problem_id: s for s in sampler.generate(reqs)}


def test_result_is_forced_and_annotation_closed(tiny_tokenizer):
    tok = tiny_tokenizer
    before = enc(tok, "There are 5*3 = <<5*3=")
    wrong = enc(tok, "16>>")  # what the model would write: the calculator overrides it
    after = enc(tok, "15 coins.\n#### 15")
    forced_ids = enc(tok, "15>>")
    assert len(wrong) == len(forced_ids)
    s = run(tok, {"a": before + wrong + after})["a"]
    assert s.text == "There are 5*3 = <<5*3=15>>15 coins.\n#### 15"
    assert s.tokens == before + forced_ids + after
    assert s.forced == [False] * len(before) + [True] * len(forced_ids) + [False] * len(after)
    assert s.calc_calls == 1
    assert (s.final_answer, s.is_correct, s.finished) == ("15", True, True)


def test_failed_evaluation_lets_the_model_write_the_result(tiny_tokenizer):
    tok = tiny_tokenizer
    script = enc(tok, "It is 5/0 = <<5/0=7>>7.\n#### 7")
    s = run(tok, {"a": script})["a"]
    assert s.tokens == script
    assert not any(s.forced)
    assert s.calc_calls == 0
    assert (s.final_answer, s.is_correct) == ("7", False)


def test_several_annotations_in_one_sample(tiny_tokenizer):
    tok = tiny_tokenizer
    s0 = enc(tok, "Sam has 13+20 = <<13+20=")
    s1 = enc(tok, "33 coins. 33-3 = <<33-3=")
    s2 = enc(tok, "30 left.\n#### 30")
    f0, f1 = enc(tok, "33>>"), enc(tok, "30>>")
    script = s0 + [0] * len(f0) + s1 + [0] * len(f1) + s2
    s = run(tok, {"a": script})["a"]
    assert s.text == "Sam has 13+20 = <<13+20=33>>33 coins. 33-3 = <<33-3=30>>30 left.\n#### 30"
    assert s.calc_calls == 2
    assert s.forced == ([False] * len(s0) + [True] * len(f0) + [False] * len(s1) + [True] * len(f1)
                        + [False] * len(s2))
    assert s.final_answer == "30"


def test_max_tokens_inside_an_annotation(tiny_tokenizer):
    tok = tiny_tokenizer
    before = enc(tok, "There are 5*3 = <<5*3=")
    script = before + [0] * 10
    # budget ends one token into the forced result
    s = run(tok, {"a": script}, max_new_tokens=len(before) + 1)["a"]
    assert s.tokens == before + enc(tok, "15>>")[:1]
    assert s.forced[-1] and not any(s.forced[:-1])
    assert s.finished is False
    assert s.text == "There are 5*3 = <<5*3=1"
    assert s.final_answer is None
    # budget ends right at the `=`: no room for a result, so no calculator call
    s = run(tok, {"a": script}, max_new_tokens=len(before))["a"]
    assert s.tokens == before and not any(s.forced) and s.finished is False and s.calc_calls == 0


def test_calculator_off_leaves_the_model_alone(tiny_tokenizer):
    tok = tiny_tokenizer
    script = enc(tok, "There are 5*3 = <<5*3=16>>16 coins.\n#### 16")
    s = run(tok, {"a": script}, calculator=False)["a"]
    assert s.tokens == script and s.calc_calls == 0 and not any(s.forced)


def test_rows_are_independent(tiny_tokenizer):
    """Rows forcing at different steps, finishing at different times, in one batch of 2 (continuous batching)."""
    tok = tiny_tokenizer
    a = enc(tok, "<<2*3=") + [0] * 2 + enc(tok, " ok\n#### 6")
    b = enc(tok, "So 10 = <<4+6=") + [0] * 3 + enc(tok, "10 in all\n#### 10")
    c = enc(tok, "#### 3")
    out = run(tok, {"a": a, "b": b, "c": c}, batch_size=2, temperature=0.7)
    assert out["a"].text == "<<2*3=6>> ok\n#### 6"
    assert out["b"].text == "So 10 = <<4+6=10>>10 in all\n#### 10"
    assert out["c"].text == "#### 3" and out["c"].calc_calls == 0
    assert [out[k].calc_calls for k in "ab"] == [1, 1]


# ---------------------------------------------------------------- tokens that merge `=` with more text


def test_merged_equals_consistent_prefix_is_kept(merging_tokenizer):
    tok = merging_tokenizer
    calc = Calculator(tok)
    ids = enc(tok, "x <<5*3") + [tok.convert_tokens_to_ids("=1")]
    f = calc.check(ids)
    assert f is not None and not f.replace_last
    assert tok.decode(ids + f.ids) == "x <<5*3=15>>"


def test_merged_equals_inconsistent_token_is_replaced(merging_tokenizer):
    tok = merging_tokenizer
    calc = Calculator(tok)
    ids = enc(tok, "x <<5*3") + [tok.convert_tokens_to_ids("=3")]
    f = calc.check(ids)
    assert f is not None and f.replace_last
    assert tok.decode(ids[:-1] + f.ids) == "x <<5*3=15>>"


def test_merged_equals_complete_result_forces_nothing(merging_tokenizer):
    tok = merging_tokenizer
    f = Calculator(tok).check(enc(tok, "x <<5*3") + [tok.convert_tokens_to_ids("=15>>")])
    assert f is not None and f.ids == [] and not f.replace_last


@pytest.mark.parametrize("text", ["x 5*3=", "<<5*3=15>> and =", "<<5*3"])
def test_no_open_annotation_no_forcing(merging_tokenizer, text):
    tok = merging_tokenizer
    assert Calculator(tok).check(enc(tok, text)) is None


def test_merged_equals_end_to_end(merging_tokenizer):
    """The sampler replaces an inconsistent "=3" and keeps a consistent "=1" (marking what it wrote)."""
    tok = merging_tokenizer
    eq3, eq1 = tok.convert_tokens_to_ids("=3"), tok.convert_tokens_to_ids("=1")
    head = enc(tok, "So <<5*3")
    tail = enc(tok, " coins.\n#### 15")
    # "=3" is replaced by the single added token "=15>>"; after "=1" the calculator forces "5", ">>"
    out = run(tok, {"bad": head + [eq3] + tail, "good": head + [eq1] + [0] * 2 + tail},
              prompts={"bad": "bad: " + PROMPT, "good": "good: " + PROMPT})
    for name in ("bad", "good"):
        s = out[name]
        assert s.text.startswith("So <<5*3=15>>"), s.text
        assert s.calc_calls == 1
    assert out["good"].tokens[len(head)] == eq1 and not out["good"].forced[len(head)]
    assert out["bad"].forced[len(head)]
