"""The shape of the tree (docs/architecture.md), checked on the code itself.

* The import graph of profiler/ has no circles.
* Every import points down the stages: base modules, capture, unwind, aggregate,
  symbolize, emit, then orchestration (profiler/app), which no stage imports.
* No file in profiler/ is over 550 lines.
* No code reads another class's private fields (an attribute `_x` of an object that is
  not `self`, unless the class doing it assigns `self._x` itself).
"""

from __future__ import annotations

import ast
from pathlib import Path

import profiler

ROOT = Path(profiler.__file__).parent
MAX_LINES = 550

# Stage of each top-level part of profiler/: an import may only go to the same or a lower one.
RANK = {"errors": 0, "model": 0, "reasons": 0, "leb128": 0, "atomic": 0, "lru": 0,
        "proto": 0, "capture": 1, "unwind": 2, "aggregate": 3, "symbolize": 4,
        "emit": 5, "app": 6, "__main__": 7}
# Private names that are part of a public API (namedtuple methods, os, ctypes).
PUBLIC_PRIVATES = {"_replace", "_make", "_asdict", "_fields", "_exit", "_CFuncPtr"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        if path.name.endswith("_pb2.py"):
            continue
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" for a in node.names]
            hits = [t for t in targets if t in modules]
            found.update(hits or ([base] if base in modules else []))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
    found.discard(name)
    found.discard("profiler")
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _rank(module: str) -> int:
    parts = module.split(".")
    return RANK[parts[1]] if len(parts) > 1 else 0


def test_no_import_circles() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                circles.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not circles, "\n".join(circles)


def test_imports_point_down_the_stages() -> None:
    graph = _graph()
    unknown = sorted(m for m in graph if len(m.split(".")) > 1 and m.split(".")[1] not in RANK)
    assert not unknown, f"modules outside every stage: {unknown}"
    up = sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps
                if _rank(d) > _rank(m))
    assert not up, "\n".join(up)


def test_no_file_a_reader_must_scroll_through() -> None:
    long = sorted(f"{p.relative_to(ROOT)}: {n}" for p in ROOT.rglob("*.py")
                  if not p.name.endswith("_pb2.py")
                  and (n := len(p.read_text().splitlines())) > MAX_LINES)
    assert not long, "\n".join(long)


def _own_fields(cls: ast.ClassDef) -> set[str]:
    return {t.attr for node in ast.walk(cls) if isinstance(node, (ast.Assign, ast.AnnAssign))
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
            and t.value.id == "self"}


def _private_reads(tree: ast.AST, allowed: frozenset[str], where: str) -> list[str]:
    out = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.ClassDef):
            out += _private_reads(node, allowed | _own_fields(node), where)
            continue
        for sub in ast.walk(node) if not isinstance(node, ast.ClassDef) else ():
            if isinstance(sub, ast.ClassDef):
                continue
            name = None
            if isinstance(sub, ast.Attribute) and not (
                    isinstance(sub.value, ast.Name) and sub.value.id in ("self", "cls")):
                name = sub.attr
            elif (isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name)
                  and sub.func.id in ("getattr", "setattr", "hasattr", "delattr")
                  and len(sub.args) > 1 and isinstance(sub.args[1], ast.Constant)):
                name = str(sub.args[1].value)
            if (name and name.startswith("_") and not name.startswith("__")
                    and name not in allowed and name not in PUBLIC_PRIVATES):
                out.append(f"{where}:{sub.lineno} {ast.unparse(sub)}")
    return out


def test_no_code_reads_another_class_private_fields() -> None:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        if not path.name.endswith("_pb2.py"):
            found += _private_reads(ast.parse(path.read_text()), frozenset(),
                                    str(path.relative_to(ROOT)))
    assert not found, "\n".join(sorted(set(found)))
