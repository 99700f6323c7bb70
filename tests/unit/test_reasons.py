"""One table of reason codes (profiler/reasons.py): the code uses its constants, never a
literal, so a code cannot be misspelt or invented outside the table."""

from __future__ import annotations

import ast
from pathlib import Path

from profiler import reasons

PROFILER = Path(reasons.__file__).parent


def test_codes_are_unique_and_named_by_their_constants() -> None:
    codes = [r.code for r in reasons.TABLE]
    assert len(codes) == len(set(codes))
    for r in reasons.TABLE:
        assert getattr(reasons, r.code.upper().replace("-", "_")) == r.code
        assert r.side in ("user", "kernel") and r.meaning


def test_no_module_spells_a_code_as_a_literal() -> None:
    found = []
    for path in sorted(PROFILER.rglob("*.py")):
        if path.name == "reasons.py" or path.name.endswith("_pb2.py"):
            continue
        tree = ast.parse(path.read_text(), str(path))
        found.extend(f"{path.relative_to(PROFILER)}:{node.lineno} {node.value!r}"
                     for node in ast.walk(tree)
                     if isinstance(node, ast.Constant) and node.value in reasons.REASONS)
    assert not found, "use the constants of profiler.reasons:\n" + "\n".join(found)
