"""The synthetic GSM-style task: determinism, disjoint splits, exact annotations, and the difficulty knobs."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from gsmv.data import synth
from gsmv.data.answers import extract_answer
from gsmv.data.calculator import evaluate, find_annotations
from gsmv.data.synth import SynthSettings, generate

NUM = re.compile(r"\d+")


def numbers(question: str) -> set[str]:
    """The numbers a question states, "a third as many" included."""
    words = {str(k) for k, w in synth.ORDINAL.items() if f"{w} " in question}
    return set(NUM.findall(question)) | words


def _steps(answer: str) -> int:
    return len(answer.splitlines()) - 1  # one line per operation, then `#### N`


@pytest.fixture(scope="module")
def problems() -> list[synth.SynthProblem]:
    return generate(400, seed=3, s=SynthSettings(min_steps=1, max_steps=8, max_distractors=3))


def test_deterministic_for_a_seed_and_different_across_seeds():
    s = SynthSettings()
    a, b = generate(50, 7, s), generate(50, 7, s)
    assert a == b
    assert [p.question for p in generate(50, 8, s)] != [p.question for p in a]
    assert [p.question for p in generate(50, 7, s, stream="test")] != [p.question for p in a]


def test_train_and_test_share_no_question():
    s = SynthSettings(min_steps=1, max_steps=1, max_distractors=0, max_number=6)  # a small space: collisions likely
    train = generate(300, 0, s)
    test = generate(100, 0, s, exclude={p.question for p in train}, stream="test")
    assert not {p.question for p in train} & {p.question for p in test}
    assert len({p.question for p in train}) == 300


def test_every_annotation_evaluates_to_its_written_result(problems):
    for p in problems:
        anns = find_annotations(p.answer)
        assert len(anns) == p.steps == _steps(p.answer)
        for a in anns:
            assert evaluate(a.expr) == a.result, (p.question, a)
            # GSM8K's form: `... 12+5 = <<12+5=17>>17 ...`
            assert f"{a.expr} = <<{a.expr}={a.result}>>{a.result}" in p.answer


def test_final_answer_is_the_last_value_and_every_operand_is_known(problems):
    for p in problems:
        assert extract_answer(p.answer) == p.values[-1]
        assert int(p.values[-1]) > 0
        known = numbers(p.question)
        for a in find_annotations(p.answer):
            # An operand is a number of the question or an earlier result: the solution follows the facts.
            for operand in NUM.findall(a.expr):
                assert operand in known, (p.question, p.answer, operand)
            known.add(a.result)


def test_one_relation_reads_the_way_it_computes():
    # A one-operation problem without distractors: the solution's operands are the two numbers in the text.
    s = SynthSettings(min_steps=1, max_steps=1, max_distractors=0, p_pack=0.0)
    for p in generate(200, 1, s):
        (a,) = find_annotations(p.answer)
        assert set(NUM.findall(a.expr)) == numbers(p.question)


def test_step_knobs(problems):
    assert {p.steps for p in problems} == set(range(1, 9))
    for lo, hi in ((2, 2), (5, 7)):
        got = generate(100, 0, SynthSettings(min_steps=lo, max_steps=hi))
        assert {_steps(p.answer) for p in got} <= set(range(lo, hi + 1))


def test_distractor_knob_adds_unneeded_numbers():
    def unused_numbers(p: synth.SynthProblem) -> int:
        used = {n for a in find_annotations(p.answer) for n in NUM.findall(a.expr)}
        return sum(n not in used for n in numbers(p.question))

    base = SynthSettings(min_steps=3, max_steps=3, p_pack=0.0)
    none = generate(200, 0, replace(base, min_distractors=0, max_distractors=0))
    assert all(unused_numbers(p) == 0 for p in none)
    two = generate(200, 0, replace(base, min_distractors=2, max_distractors=2))
    assert sum(unused_numbers(p) >= 1 for p in two) >= 190


def test_number_range_knob():
    small = generate(200, 0, SynthSettings(max_number=9, max_factor=3, max_distractors=0, p_pack=0.0))
    for p in small:
        assert all(int(n) <= 9 for n in NUM.findall(p.question))


def test_graph_knob_makes_combinations():
    flat = dict(min_steps=4, max_steps=4, max_distractors=0, p_pack=0.0)
    for p in generate(100, 0, SynthSettings(p_combine=0.0, **flat)):  # a chain: each step uses the last result
        anns = find_annotations(p.answer)
        assert all(NUM.findall(a.expr)[0] == prev.result for prev, a in zip(anns, anns[1:], strict=False))
    def joins_two_results(p: synth.SynthProblem) -> bool:  # a step that uses an older result and the last one
        anns = find_annotations(p.answer)
        return any(NUM.findall(a.expr) == [anns[j].result, anns[i - 1].result]
                   for i, a in enumerate(anns) for j in range(i - 1))

    graph = generate(100, 0, SynthSettings(p_combine=1.0, **flat))
    assert sum(map(joins_two_results, graph)) >= 30
    assert not any(map(joins_two_results, generate(100, 0, SynthSettings(p_combine=0.0, **flat))))


def test_enough_templates():
    assert synth.N_FACT_TEMPLATES >= 40 and synth.N_QUESTION_TEMPLATES >= 10
