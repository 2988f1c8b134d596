"""The house a newcomer walks: packages that import only downward, no cycle, no module over 450
lines and no function over 80, and a Backend protocol that names every attribute the kit reads.

Read from the source files themselves (every import, at the top of a module or inside a function),
so a new module or import is judged the day it is written.
"""

import ast
from collections import defaultdict
from pathlib import Path

import pytest

import research

SRC = Path(research.__file__).resolve().parent


def module_name(path: Path) -> str:
    return ".".join(("research", *path.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in research.LAYERS else "base"


def imports() -> dict[str, set[str]]:
    """Every module of the kit and the modules of the kit it imports."""
    known = {module_name(p) for p in SRC.rglob("*.py")}
    out: dict[str, set[str]] = defaultdict(set)
    for path in SRC.rglob("*.py"):
        me = module_name(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "research":
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    out[me].add(full if full in known else node.module)
            elif isinstance(node, ast.Import):
                out[me] |= {a.name for a in node.names if a.name.split(".")[0] == "research"}
    return out


def test_packages_import_only_downward():
    order = research.LAYERS
    up = [
        (a, b)
        for a, bs in imports().items()
        for b in bs
        if a != "research.__main__" and order.index(layer_of(b)) > order.index(layer_of(a))
    ]
    assert up == [], f"imports up the layers (research.LAYERS): {up}"


def test_no_import_cycle():
    graph = imports()
    seen, on_path, cycles = set(), [], []

    def visit(m):
        if m in on_path:
            cycles.append(on_path[on_path.index(m) :] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        on_path.append(m)
        for n in sorted(graph.get(m, ())):
            visit(n)
        on_path.pop()

    for m in sorted(graph):
        visit(m)
    # A package's __init__ importing its own modules (its public face) is not a cycle of the code.
    real = [
        c for c in cycles if not any(x.count(".") == 1 and any(y.startswith(x + ".") for y in c) for x in c)
    ]
    assert real == [], f"import cycles: {real}"


def test_modules_and_functions_stay_small():
    big, long = [], []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        if len(text.splitlines()) > 450:
            big.append((str(path.relative_to(SRC)), len(text.splitlines())))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append((f"{path.relative_to(SRC)}:{node.name}", n))
    assert big == [] and long == [], (big, long)


def test_every_package_says_what_lives_there_and_what_it_may_import():
    for layer in research.LAYERS[1:]:
        doc = (SRC / layer / "__init__.py").read_text()
        assert doc.startswith('"""') and "May import" in doc, layer


def backend_attributes_read() -> set[str]:
    """The attributes the kit reads of a backend: `b.x`, `backend.x`, `self.backend.x`."""
    import re

    found = set()
    named = re.compile(r"\bbackend\.([a-z_]+)\b")
    short = re.compile(r"\bb\.([a-z_]+)\b")  # where `b = ....backend` names it so
    for path in SRC.rglob("*.py"):
        if path.name == "llama.py":  # the backend itself
            continue
        text = path.read_text()
        found |= set(named.findall(text))
        if re.search(r"\bb = (?:self|engine|e)\.backend\b", text):
            found |= set(short.findall(text))
    return found - {"llm"}  # llama.cpp's own Llama: read only where a real llama.cpp is needed


def test_the_backend_protocol_names_every_attribute_the_kit_reads():
    from fakes import FakeBackend

    from research.engine import Backend

    declared = set(Backend.__annotations__) | {
        n for n in vars(Backend) if not n.startswith("_") and callable(getattr(Backend, n))
    }
    missing = backend_attributes_read() - declared
    assert missing == set(), f"read of a backend but not in engine.types.Backend: {missing}"
    assert isinstance(FakeBackend(["x"]), Backend)  # the tests' backend is a whole one


@pytest.mark.model
def test_the_llama_backend_is_a_whole_backend():
    from research.engine import Backend, EngineConfig
    from research.engine.llama import LlamaBackend
    from research.models.catalog import resolve

    b = LlamaBackend(str(resolve(None).path), EngineConfig(n_ctx=256, n_threads=1))
    try:
        assert isinstance(b, Backend)
        assert all(hasattr(b, name) for name in Backend.__annotations__)
    finally:
        b.close()
