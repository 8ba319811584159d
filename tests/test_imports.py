"""No import cycles in the infsim package (``infsim/``, ``isa/`` as ``infsim.isa``, ``models/`` as
``infsim.models``), checked on the source with :mod:`ast`.

The graph has one node per module and an edge for every import of an infsim module, plus the packages
Python initialises on the way (importing ``a.b.c`` first runs ``a/__init__`` and ``a/b/__init__``),
except the importer's own enclosing packages, which are already initialising when it runs. Imports under
``if TYPE_CHECKING:`` never run and are skipped.

Two graphs are checked:

* module-level imports (what runs when a module is first imported): no cycle at all;
* module-level plus imports inside functions (which run at call time, when the modules involved are
  loaded, so they cannot fail the way a module-level cycle does, but they hide the same tangle of
  concepts): no cycle either, except the function-level imports listed in :data:`LAZY_CYCLES` with the
  reason each is there. The list must not hold an entry that closes no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYOUT = {"infsim": "infsim", "isa": "infsim.isa", "models": "infsim.models"}  # folder -> package (pyproject)

# (importer, imported): why a function-level import that closes a cycle is kept
LAZY_CYCLES: dict[tuple[str, str], str] = {}


def modules(root: Path, layout: dict[str, str]) -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package ``__init__``)."""
    out: dict[str, tuple[Path, bool]] = {}
    for folder, pkg in layout.items():
        for f in sorted((root / folder).rglob("*.py")):
            parts = list(f.relative_to(root / folder).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            if is_pkg:
                parts = parts[:-1]
            out[".".join([pkg, *parts])] = (f, is_pkg)
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports_of(name: str, path: Path, is_pkg: bool, known: set[str]) -> list[tuple[str, int, bool]]:
    """``(imported module, line, inside a function)`` for every import of a module in ``known``."""
    pkg = name if is_pkg else name.rpartition(".")[0]
    out: list[tuple[str, int, bool]] = []

    def nearest(mod: str) -> str | None:
        while mod and mod not in known:
            mod = mod.rpartition(".")[0]
        return mod or None

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for c in child.orelse:
                    visit_one(c, lazy)
            else:
                visit_one(child, lazy)

    def visit_one(node: ast.AST, lazy: bool) -> None:
        if isinstance(node, ast.Import):
            for a in node.names:
                if (t := nearest(a.name)) is not None:
                    out.append((t, node.lineno, lazy))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                src = ".".join(base + ([node.module] if node.module else []))
            else:
                src = node.module or ""
            for a in node.names:  # `from pkg import submodule` imports the submodule
                t = f"{src}.{a.name}" if f"{src}.{a.name}" in known else nearest(src)
                if t is not None:
                    out.append((t, node.lineno, lazy))
        else:
            visit(node, lazy or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    visit(ast.parse(path.read_text(), str(path)), False)
    return out


def import_graph(root: Path, layout: dict[str, str]) -> tuple[dict[str, set[str]], dict[str, set[str]],
                                                                dict[tuple[str, str], int]]:
    """(module-level edges, function-level edges, line of the first import behind each edge)."""
    mods = modules(root, layout)
    known = set(mods)
    eager: dict[str, set[str]] = {m: set() for m in mods}
    lazy: dict[str, set[str]] = {m: set() for m in mods}
    line: dict[tuple[str, str], int] = {}
    for m, (path, is_pkg) in mods.items():
        own = {m.rsplit(".", k)[0] for k in range(m.count(".") + 1)}
        for t, ln, is_lazy in imports_of(m, path, is_pkg, known):
            if t == m:
                continue
            implied = {t.rsplit(".", k)[0] for k in range(1, t.count(".") + 1)} - own
            for x in ({t} | implied) & known:
                (lazy if is_lazy else eager)[m].add(x)
                line.setdefault((m, x), ln)
    return eager, lazy, line


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on_stack.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def _describe(comps: list[list[str]], graph: dict[str, set[str]], line: dict[tuple[str, str], int]) -> str:
    parts = []
    for comp in comps:
        cs = set(comp)
        edges = [f"{a} -> {b} (line {line[(a, b)]})" for a in comp for b in sorted(graph[a] & cs)]
        parts.append("; ".join(edges))
    return "\n".join(parts)


def test_no_module_level_import_cycles() -> None:
    eager, _lazy, line = import_graph(ROOT, LAYOUT)
    assert len(eager) > 50  # the walk found the package
    comps = cycles(eager)
    assert not comps, "import cycles at module level:\n" + _describe(comps, eager, line)


def test_no_import_cycles_through_function_level_imports() -> None:
    eager, lazy, line = import_graph(ROOT, LAYOUT)
    allowed = set(LAZY_CYCLES)
    full = {m: eager[m] | {t for t in lazy[m] if (m, t) not in allowed} for m in eager}
    comps = cycles(full)
    assert not comps, "import cycles through imports inside functions:\n" + _describe(comps, full, line)
    # every allowed entry exists and does close a cycle
    with_all = {m: eager[m] | lazy[m] for m in eager}
    in_cycle = {(a, b) for comp in cycles(with_all) for a in comp for b in lazy[a] & set(comp)}
    stale = allowed - in_cycle
    assert not stale, f"LAZY_CYCLES entries that close no cycle (remove them): {sorted(stale)}"


def test_the_check_finds_cycles(tmp_path: Path) -> None:
    pkg = tmp_path / "p"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from p.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("from . import c\n")
    (pkg / "sub" / "b.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import p.a\n"
                                      "def f():\n    from p import a\n")
    eager, lazy, _ = import_graph(tmp_path, {"p": "p"})
    assert eager["p.a"] == {"p.sub", "p.sub.b"}  # the package on the way is an edge
    assert eager["p.sub"] == {"p.sub.c"} and eager["p.sub.c"] == set()  # TYPE_CHECKING skipped
    assert lazy["p.sub.c"] == {"p.a"}
    assert cycles(eager) == []
    assert cycles({m: eager[m] | lazy[m] for m in eager}) == [["p.a", "p.sub", "p.sub.c"]]
