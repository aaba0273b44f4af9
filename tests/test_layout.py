"""The package's layout rules (README "Where things live"), checked on its source so they stay true:
no import cycle, small modules, a domain that knows nothing of HTTP, and handlers that only translate."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "backend" / "coinslot"
MAX_MODULE_LINES = 400
MAX_HANDLER_LINES = 60
# Modules that may know HTTP (Starlette) or a payment provider's library; every other is domain or plumbing.
# settings reads the environment with starlette.config, as the house style asks.
WEB = {"app", "serving", "cli", "settings"}
FOREIGN = ("starlette", "stripe", "uvicorn")


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path) -> set[str]:
    """Every module of the package ``name`` imports, at the top, in a function or for type checking."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    known = modules()
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in known and t != name}
    return out


def test_no_import_cycle_anywhere_in_the_package() -> None:
    graph = {name: imports(name, path) for name, path in modules().items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert cycles == []
    assert len(graph) > 40 and sum(map(len, graph.values())) > 150  # the walk saw the real package


def test_no_module_is_over_400_lines() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert {n: s for n, s in sizes.items() if s > MAX_MODULE_LINES} == {}


def test_the_domain_imports_no_web_framework_no_payment_library_and_no_handler() -> None:
    offenders = {}
    for name, path in modules().items():
        short = name.removeprefix("coinslot.")
        if short.startswith("http") or short in WEB or short.startswith("payments"):
            continue
        tree = ast.parse(path.read_text())
        named = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        named |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        bad = {
            m for m in named if m.split(".")[0] in ("starlette", "stripe", "uvicorn") or m.startswith("coinslot.http")
        }
        if bad:
            offenders[name] = sorted(bad)
    assert offenders == {}


def test_the_command_line_imports_no_handler() -> None:
    assert {m for m in imports("coinslot.cli", PACKAGE / "cli.py") if m.startswith("coinslot.http")} == set()


def test_handlers_are_short() -> None:
    long, handlers = {}, 0
    for path in sorted((PACKAGE / "http").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.AsyncFunctionDef) or [a.arg for a in node.args.args[:1]] != ["request"]:
                continue
            handlers += 1
            if node.end_lineno is not None:
                if node.end_lineno - node.lineno + 1 > MAX_HANDLER_LINES:
                    long[f"{path.name}:{node.name}"] = node.end_lineno - node.lineno + 1
    assert long == {}
    assert handlers > 20
