"""The tuners package has no import circles: module-level imports between its modules form a DAG (config and
model_card, provenance and lora used to import each other)."""

from __future__ import annotations

import ast
from pathlib import Path

import rvc_peft.tuners

TUNERS = Path(rvc_peft.tuners.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(TUNERS.parent).with_suffix("").parts
    return ".".join(("rvc_peft",) + (parts[:-1] if parts[-1] == "__init__" else parts))


def _top_level_imports(path: Path, name: str) -> set[str]:
    """Modules of rvc_peft.tuners imported at module level (not inside functions or TYPE_CHECKING blocks)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from . import x` may name a submodule: keep both spellings, the caller keeps the real modules
            found.update(f"{target}.{alias.name}" for alias in node.names)
            found.add(target)
    return found


def test_tuners_modules_import_each_other_without_circles() -> None:
    modules = {_module_name(p): p for p in TUNERS.rglob("*.py")}
    graph = {name: {m for m in _top_level_imports(path, name) if m in modules and m != name}
             for name, path in modules.items()}
    assert graph.get("rvc_peft.tuners.lora.config")  # the parser sees imports

    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = trail[trail.index(nxt):] + [node, nxt] if nxt in trail else [node, nxt]
                raise AssertionError(f"import circle in rvc_peft.tuners: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
