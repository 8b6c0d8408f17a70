"""The docs a user and a developer follow: every relative link resolves, and DESIGN.md names every module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", ROOT / "BENCHMARKS.md", *(ROOT / "docs").rglob("*.md")])
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where `[a](b)` is code, not a link."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(md: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation other than '-' and '_' dropped, spaces to '-'."""
    heads = re.findall(r"^#+\s+(.*?)\s*$", re.sub(r"^```.*?^```", "", md.read_text(), flags=re.S | re.M), re.M)
    return {re.sub(r"[^\w\- ]", "", h.replace("`", "").lower()).replace(" ", "-") for h in heads}


def links(md: Path) -> list[str]:
    return [t for t in LINK.findall(prose(md.read_text())) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("md", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(md: Path):
    broken = []
    for target in links(md):
        path, _, anchor = target.partition("#")
        dest = (md.parent / path).resolve() if path else md
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(target)
    assert not broken, f"{md.relative_to(ROOT)}: broken links {broken}"


def test_the_link_checker_finds_links_and_anchors(tmp_path):
    md = tmp_path / "a.md"
    md.write_text("# What limits it (issue 20, 2026-12-01)\n[x](b.md) ![y](c.png) [z](#what-limits-it-issue-20-2026-12-01)"
                  " [web](https://example.com) `[code](nowhere.md)`\n```\n[block](nowhere.md)\n```\n")
    assert links(md) == ["b.md", "c.png", "#what-limits-it-issue-20-2026-12-01"]
    assert "what-limits-it-issue-20-2026-12-01" in anchors(md)


def defines_something(py: Path) -> bool:
    return any(isinstance(n, ast.FunctionDef | ast.ClassDef) for n in ast.parse(py.read_text()).body)


def modules() -> list[str]:
    """Every module of src/gsmv as DESIGN.md would name it: `cli`, `models/loading`, `report/` (a package's
    __init__ that holds code)."""
    src = ROOT / "src" / "gsmv"
    out = []
    for py in sorted(src.rglob("*.py")):
        rel = py.relative_to(src)
        if rel.name == "__main__.py" or (rel.name == "__init__.py" and not defines_something(py)):
            continue  # an __init__ of a docstring and re-exports is the package, named by its modules
        out.append(f"{rel.parent}/" if rel.name == "__init__.py" else str(rel.with_suffix("")))
    return out


def named_in(design: str, module: str) -> bool:
    """A module is named when a code span in DESIGN.md gives it: `x`, `gsmv.x`, `x.func`; a package's module
    `y` also as `y` in a paragraph or bullet that names its package `pkg/`."""
    pkg, _, name = module.rpartition("/")
    dotted = module.rstrip("/").replace("/", ".")
    for chunk in re.split(r"\n\s*\n|\n- ", design):
        tokens = {t for span in re.findall(r"`([^`]*)`", chunk) for t in re.findall(r"[\w./]+", span)}
        tokens |= {t.removeprefix("gsmv.") for t in tokens}
        if any(t == dotted or t.startswith(dotted + ".") or t == module for t in tokens):
            return True
        if pkg and name and f"{pkg}/" in tokens and name in tokens:
            return True
    return False


def test_design_names_every_module():
    design = (ROOT / "docs" / "DESIGN.md").read_text()
    missing = [m for m in modules() if not named_in(design, m)]
    assert not missing, f"docs/DESIGN.md does not name {missing}: say what each new module owns"
