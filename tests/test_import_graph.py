"""The shape of the code, checked: the import graph of `simlab` and `sweeps` and the size of modules.

Read with `ast` (nothing is imported), every import statement counts wherever it is: at module level,
inside a function, under ``if TYPE_CHECKING:``. An import of a project module is an edge to the
longest module path it names (``from simlab.data import load_dataset`` -> ``simlab.data``,
``from simlab import calibration`` -> ``simlab.calibration``); relative imports are resolved.

- No cycle between project modules: a cycle hidden behind a function-local import is still a cycle.
- `simlab` (the library) never imports `sweeps` (the Ray/MLflow layer built on it).
- A module over `MAX_LINES` lines says why on the first line of its docstring, with the marker
  ``long:`` and a reason, e.g. ``\"\"\"The sweep driver (long: the four phases of a run read in order).``
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("simlab", "sweeps")
MAX_LINES = 400
LONG_MARKER = "long:"
# Fails on main before the issue 11 branches merge; the lead removes the mark then.


def _modules() -> dict[str, Path]:
    """``{dotted name: file}`` for every module of the project packages (a package is its __init__)."""
    mods = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The longest prefix of ``name`` that is a project module, else None (a third-party import)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imported(module: str, path: Path) -> list[tuple[str, int]]:
    """``(project module, line)`` for every import statement in ``path``."""
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package that holds this module
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name)
            if target is not None and target != module:
                out.append((target, node.lineno))
    return out


def _graph() -> dict[str, dict[str, int]]:
    """``{module: {imported module: first line importing it}}``."""
    edges: dict[str, dict[str, int]] = defaultdict(dict)
    for module, path in MODULES.items():
        for target, line in _imported(module, path):
            edges[module].setdefault(target, line)
    return edges


def _cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    nodes = set(edges) | {target for targets in edges.values() for target in targets}
    for start in sorted(nodes):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, {}))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _where(module: str, line: int) -> str:
    return f"{MODULES[module].relative_to(ROOT)}:{line}"


def test_the_walk_sees_every_kind_of_import(tmp_path):
    """The walker itself: module-level, function-local and relative imports; cycles in a known graph."""
    source = (
        "import simlab.labels\nfrom simlab.data import load_dataset\nfrom . import losses\n"
        "from .data import readers\nimport numpy\n"
        "def f():\n    from simlab import calibration\n    import sweeps.spec\n"
    )
    path = tmp_path / "mod.py"
    path.write_text(source)
    got = {target for target, _ in _imported("simlab.fake", path)}
    assert {"simlab.labels", "simlab.data", "simlab.losses", "simlab.data.readers"} <= got
    assert {"simlab.calibration", "sweeps.spec"} <= got
    assert not any(t.startswith("numpy") for t in got)
    ring = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1, "e": 1}, "e": {}}
    assert _cycles(ring) == [["a", "b", "c"]]
    assert _cycles({"a": {"b": 1}, "b": {}}) == []


def test_no_import_cycle_between_project_modules():
    edges = _graph()
    cycles = _cycles(edges)
    lines = []
    for component in cycles:
        members = set(component)
        lines.append("cycle: " + ", ".join(component))
        for module in component:
            for target, line in sorted(edges[module].items()):
                if target in members:
                    lines.append(f"    {module} -> {target}  ({_where(module, line)})")
    assert not cycles, "import cycles (every import counts, function-local ones too):\n" + "\n".join(lines)


def test_simlab_never_imports_sweeps():
    edges = _graph()
    upward = [
        f"{module} -> {target}  ({_where(module, line)})"
        for module, targets in sorted(edges.items())
        if module.split(".")[0] == "simlab"
        for target, line in sorted(targets.items())
        if target.split(".")[0] == "sweeps"
    ]
    assert not upward, "simlab imports sweeps (the library must not know its sweep layer):\n" + "\n".join(
        upward
    )


def test_a_long_module_says_why_at_its_top():
    unexplained = []
    for path in sorted(MODULES.values()):
        text = path.read_text()
        n = len(text.splitlines())
        if n <= MAX_LINES:
            continue
        doc = ast.get_docstring(ast.parse(text), clean=False) or ""
        first = doc.strip().splitlines()[0] if doc.strip() else ""
        reason = first.partition(LONG_MARKER)[2].strip(" .)")
        if LONG_MARKER not in first or len(reason) < 10:
            unexplained.append(f"{path.relative_to(ROOT)}: {n} lines")
    assert not unexplained, (
        f"modules over {MAX_LINES} lines without '{LONG_MARKER} <reason>' on the first docstring line "
        "(split them, or say why they are one concept):\n" + "\n".join(unexplained)
    )


# --- the module map of docs/ARCHITECTURE.md ----------------------------------------------------------
def _module_map() -> dict[str, tuple[str, ...]]:
    """``{dotted module: allowed imports}`` from the table between the ``module map`` markers."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    start, end = text.index("<!-- module map -->"), text.index("<!-- /module map -->")
    out = {}
    for line in text[start:end].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        parts = Path(cells[0].strip("`")).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        allowed = tuple(a.strip() for a in cells[2].split(",") if a.strip() not in ("", "-"))
        out[name] = allowed
    return out


def test_the_module_map_lists_every_module_once() -> None:
    listed = _module_map()
    assert set(listed) == set(MODULES), (
        f"docs/ARCHITECTURE.md module map: missing {sorted(set(MODULES) - set(listed))}, "
        f"not in the code {sorted(set(listed) - set(MODULES))}"
    )


def test_every_import_is_one_the_module_map_allows() -> None:
    """A module imports only what its map line names (a package covers its submodules; "its
    submodules" = the module's own package contents). The map is the design: change both together."""
    listed = _module_map()
    bad = []
    for module, path in MODULES.items():
        allowed = listed.get(module, ())
        for target, line in _imported(module, path):
            if target in ("simlab", "sweeps") or target.startswith(module + "."):
                if target.startswith(module + ".") and "its submodules" not in allowed:
                    bad.append(f"{module}:{line} -> {target} (its submodules not listed)")
                continue
            if not any(target == a or target.startswith(a + ".") for a in allowed):
                bad.append(f"{module}:{line} -> {target}")
    assert not bad, "imports missing from docs/ARCHITECTURE.md's module map:\n" + "\n".join(bad)
