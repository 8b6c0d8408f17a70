"""What each config key means, read from the config dataclasses themselves: the comment on a field's line (or
the block right above it) is its help, and its metadata says which hashes see it. `gsmv config` prints it."""

from __future__ import annotations

import ast
import inspect
import io
import json
import tokenize
from dataclasses import fields
from typing import Any

from gsmv.config import RunConfig


def field_help(cls: type) -> dict[str, str]:
    """Each field's help: the comment on its line, else the comment block right above it, in the dataclass's source
    (and its bases')."""
    out: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if hasattr(k, "__dataclass_fields__")]):
        lines, _ = inspect.getsourcelines(klass)
        comments = {tok.start[0]: tok.string.lstrip("#").strip()
                    for tok in tokenize.generate_tokens(io.StringIO("".join(lines)).readline)
                    if tok.type == tokenize.COMMENT}
        body = ast.parse("".join(lines)).body[0]  # config dataclasses are top-level classes
        for node in getattr(body, "body", []):
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            row = node.lineno  # within `lines`, like the comments' rows
            text = comments.get(row)
            if text is None:
                above, r = [], row - 1
                while r in comments and lines[r - 1].lstrip().startswith("#"):
                    above.insert(0, comments[r])
                    r -= 1
                text = " ".join(above)
            out[node.target.id] = text
    return out


def describe(cfg: RunConfig) -> str:
    """Every config key with its value and help, as the dotted overrides a command line takes."""
    rows: list[str] = []

    def walk(obj: Any, prefix: str) -> None:
        helps = field_help(type(obj))
        for f in fields(obj):
            value = getattr(obj, f.name)
            if hasattr(value, "__dataclass_fields__"):
                walk(value, f"{prefix}{f.name}.")
                continue
            mark = {"never": " [speed only: in no hash]", "stage": " [cadence: a run may resume with another value]"}
            note = helps.get(f.name, "") + mark.get(f.metadata.get("hash", ""), "")
            rows.append(f"{prefix}{f.name}={json.dumps(value)}" + (f"  # {note.strip()}" if note.strip() else ""))

    walk(cfg, "")
    return "\n".join(rows)
