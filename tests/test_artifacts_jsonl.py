"""artifacts.iter_jsonl: lines end at b"\\n" only; errors name file:line on one line."""

from __future__ import annotations

import json

import pytest

from gsmv.artifacts import iter_jsonl
from gsmv.errors import GsmvError

# Characters str.splitlines splits at that JSON allows unescaped inside a string.
SEPARATORS = ["\u2028", "\u2029", "\x85"]


def test_line_separators_inside_strings_stay_in_their_record(tmp_path):
    recs = [{"question": f"Tom has 3 apples.{sep}How many?", "answer": "#### 3"} for sep in SEPARATORS]
    path = tmp_path / "train.jsonl"
    text = "\n".join(json.dumps(r, ensure_ascii=False) for r in recs)
    path.write_bytes((text + "\n\n" + '{"question": "q", "answer": "a"}\r\n').encode())
    got = list(iter_jsonl(path))
    assert [r for _, _, r in got] == [*recs, {"question": "q", "answer": "a"}]
    assert [(i, where) for i, where, _ in got] == [(i, f"{path}:{i + 1}") for i in (0, 1, 2, 4)]


def test_errors_keep_line_numbers_after_a_separator(tmp_path):
    path = tmp_path / "test.jsonl"
    first = json.dumps({"question": "a\u2028b"}, ensure_ascii=False)
    path.write_bytes(f"{first}\n\n{{not json\n".encode())
    with pytest.raises(GsmvError) as e:
        list(iter_jsonl(path))
    msg = str(e.value)
    assert msg.startswith(f"{path}:3: invalid JSON (") and "\n" not in msg


def test_unreadable_files(tmp_path):
    with pytest.raises(GsmvError, match="file not found"):
        list(iter_jsonl(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"q": "\xff"}\n')
    with pytest.raises(GsmvError, match="cannot read"):
        list(iter_jsonl(bad))
