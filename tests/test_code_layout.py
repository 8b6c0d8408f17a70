"""The package's shape: no import cycle among gsmv modules, no module over MAX_LINES lines.

Imports inside functions count as much as those at the top of a module. gsmv imports lazily on purpose, to keep
torch and transformers out of light commands (`gsmv config`, `gsmv presets`) and out of the stage list, never to
break a cycle; a lazy import that closes a cycle is still two modules that each need the other (the cycle this
test was written for, gsmv.models.loading <-> gsmv.models.verifier, was lazy on both sides). Only imports under
`if TYPE_CHECKING:` are left out: they never run.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 600


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under root (a package is its __init__.py)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _skip_type_checking(tree: ast.AST) -> list[ast.AST]:
    """Every node of the tree except those under `if TYPE_CHECKING:`."""
    out, todo = [], [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo += node.orelse
            continue
        out.append(node)
        todo += ast.iter_child_nodes(node)
    return out


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """module -> the modules of `package` it imports, at module level or in a function."""
    mods = modules(root)

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        deps: set[str | None] = set()
        for node in _skip_type_checking(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps |= {owner(a.name) for a in node.names if a.name.split(".")[0] == package}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package, one level up per extra dot
                    anchor = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    anchor = anchor[:len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                if base.split(".")[0] != package:
                    continue
                # `from gsmv import progress` imports the module gsmv.progress; `from gsmv.x import f`, gsmv.x.
                deps |= {f"{base}.{a.name}" if f"{base}.{a.name}" in mods else owner(base) for a in node.names}
        graph[mod] = {d for d in deps if d is not None and d != mod}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        return list(e.args[1])
    return None


def test_no_import_cycle_among_gsmv_modules():
    cycle = find_cycle(import_graph(SRC, "gsmv"))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_module_over_max_lines():
    long = {str(p.relative_to(SRC)): n for p in modules(SRC).values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them): {long}"


@pytest.mark.parametrize("lazy", [False, True])
def test_the_cycle_check_finds_cycles_at_module_level_and_in_functions(tmp_path, lazy):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    back = "def f():\n    from ..a import x\n" if lazy else "import pkg.a\n"
    (pkg / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.c\n" + back)
    (pkg / "c.py").write_text("import pkg.sub.b\n")  # b -> c only under TYPE_CHECKING: no cycle through c
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.sub.b"] == {"pkg.a"}
    assert set(find_cycle(graph)) == {"pkg.a", "pkg.sub.b"}
