"""README's code that users copy: the standalone verifier snippet runs and gives gsmv's own value."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def snippet(marker: str) -> str:
    text = README.read_text()
    m = re.search(rf"<!-- {marker}[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert m, f"README has no python block after <!-- {marker} -->"
    return m.group(1)


def test_standalone_verifier_snippet_gives_gsmvs_value(tiny_llama_dir, tmp_path):
    from gsmv.models.verifier import build_verifier, load_verifier, prompt_ids, score_sequences

    ver, tok = build_verifier(tiny_llama_dir, head="token")
    with torch.no_grad():  # a head that is not the identity, so a snippet ignoring it would differ
        ver.gain.fill_(0.37)
        ver.bias.fill_(-0.8)
    folder = tmp_path / "verifier"
    ver.save_pretrained(folder, tok)
    code = snippet("standalone-verifier")
    assert len(code.strip().splitlines()) <= 14
    code = code.replace('"runs/synth/verifier/final"', repr(str(folder)))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    got = float(out.getvalue().strip())

    # gsmv's own scoring of the same question and solution
    v, t = load_verifier(folder)
    ns: dict = {}
    exec(compile("\n".join(x for x in code.splitlines() if x.startswith(("question =", "solution ="))), "q", "exec"), ns)
    ids = prompt_ids(t, ns["question"]) + t(ns["solution"], add_special_tokens=False)["input_ids"] + [t.eos_token_id]
    [(want, _)] = score_sequences(v, [ids], [len(ids) - 1], batch_size=1, pad_id=t.eos_token_id)
    assert got == pytest.approx(want, abs=1e-5)
    assert abs(want - 0.5) > 1e-3  # a value that depends on the head, not a constant


def test_first_screen_has_what_it_does_the_results_and_the_set_up():
    """Issue 38: a new user reads, before line 40, what gsmv does, a results table whose every row has its
    command, and the two set-up commands; CI runs README's test command as written."""
    head = README.read_text().splitlines()[:40]
    assert head[0].startswith("# gsmv") and len(head[2]) > 40  # the title, then the paragraph on what it does
    rows = [line for line in head if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) >= 4
    for row in rows:  # a number without its command is not a result a user can reproduce
        assert re.search(r"`gsmv (run|evaluate)[^`]*`|the same command", row.split("|")[-2]), row
    commands = [line for line in head if line.startswith("python3 -m venv .venv")]
    assert commands == ['python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[cpu]" && gsmv run',
                        'python3 -m venv .venv && . .venv/bin/activate && pip install -q -e ".[cpu,dev]" && pytest']
    ci = (README.parent / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == commands[1]


def test_readme_stays_short():
    # The research log lives in docs/research/, the paper's differences in docs/paper.md; issue 46 raised 260 to
    # 300 for what a newcomer needs in README itself: the glossary and "Your own problems" (45 lines).
    assert len(README.read_text().splitlines()) <= 300
