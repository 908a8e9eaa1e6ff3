"""The package's shape: layers (mapped in lwzoo/__init__.py) import downward only, stages never import each other,
no lwzoo import hides inside a function, there are no import cycles, and no function body is over 60 lines."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "lwzoo"
LAYERS = {
    "core": [
        "errors", "version", "resources", "env", "files", "config", "recipe", "archs", "devices", "scoring",
        "progress", "distributed", "losses", "split_bn", "moco", "schedules", "augment", "preprocess", "engine",
    ],
    "data": ["builtin_data", "data"],
    "io": [
        "run_folder", "checkpoint", "metrics", "features", "card", "hub_folder", "onnx_runtime", "hub_client",
        "encoders", "zoo", "init_weights",
    ],
    "stages": ["pretrain", "evaluate", "export", "publish", "load"],
    "workflows": ["embed", "zoo_build", "sweep"],
    "cli": ["cli", "__init__", "__main__"],
}  # fmt: skip
ORDER = list(LAYERS)
LAYER_OF = {module: layer for layer, modules in LAYERS.items() for module in modules}


def module_name(path: Path) -> str:
    return "cli" if path.parent.name == "cli" else path.stem


def lwzoo_imports(path: Path) -> list[tuple[str, bool]]:
    """(imported lwzoo module, imported at module level) for every relative import in ``path``."""
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        base = node.module.split(".")[0] if node.module else None
        inside_cli = path.parent.name == "cli"
        if inside_cli and node.level == 1:
            targets = ["cli"]
        elif base is not None:
            targets = [base]
        else:  # from . import x, y
            targets = [alias.name for alias in node.names]
        found += [(t, id(node) in top_level) for t in targets]
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    unplaced = sorted({module_name(p) for p in SOURCES} - set(LAYER_OF))
    assert not unplaced, f"place these modules in a layer (lwzoo/__init__.py and LAYERS): {unplaced}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_downward_and_sit_at_the_top(path):
    here = module_name(path)
    for target, at_top in lwzoo_imports(path):
        if target == here:
            continue
        assert at_top, f"{here} imports {target} inside a function"
        mine, theirs = ORDER.index(LAYER_OF[here]), ORDER.index(LAYER_OF[target])
        assert theirs <= mine, f"{here} ({LAYER_OF[here]}) imports {target} ({LAYER_OF[target]}), a higher layer"
        if LAYER_OF[here] == "stages":
            assert LAYER_OF[target] != "stages", f"stage {here} imports stage {target}"


def test_no_import_cycles():
    graph = {module_name(p): set() for p in SOURCES}
    for path in SOURCES:
        graph[module_name(path)] |= {t for t, _ in lwzoo_imports(path) if t != module_name(path)}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        if state.get(node) == 1:
            pytest.fail(f"import cycle: {' -> '.join(trail[trail.index(node) :] + [node])}")
        if state.get(node) == 2:
            return
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, trail + [node])
        state[node] = 2

    for module in sorted(graph):
        visit(module, [])


def test_the_checker_catches_an_upward_import(tmp_path):
    """The rule is not vacuous: an io module importing a stage is flagged."""
    bad = tmp_path / "checkpoint.py"
    bad.write_text("from .pretrain import pretrain\n\ndef f():\n    from .export import export\n")
    imports = lwzoo_imports(bad)
    assert ("pretrain", True) in imports and ("export", False) in imports
    assert ORDER.index(LAYER_OF["pretrain"]) > ORDER.index(LAYER_OF["checkpoint"])


def body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function's body, its signature and docstring aside."""
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]
    return body[-1].end_lineno - body[0].lineno + 1 if body else 0


def test_no_function_body_is_over_sixty_lines():
    long = sorted(
        (body_lines(node), f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}")
        for path in SOURCES
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and body_lines(node) > 60
    )
    assert not long, f"split these (body lines, function): {long}"
