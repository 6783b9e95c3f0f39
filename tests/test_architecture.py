"""The architecture holds: imports point down the layers, imgui stays in the GUI layer, model
SDKs stay in providers/ and load lazily, and no source file or class outgrows one sitting.

DESIGN.md's table, as code: each door file at the root and the package behind it form a layer;
a module may import its own layer and any layer below it, never one above or beside it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# layer: (rank, door module, package(s) behind it). Lower rank = further down.
LAYERS: dict[str, tuple[int, tuple[str, ...]]] = {
    "models": (0, ("models", "domain")),
    "prompts": (1, ("prompts",)),            # builds requests out of the models
    "events": (2, ("events",)),
    "providers": (3, ("ai_client", "providers")),
    "tools": (3, ("tools", "toolbox")),
    "store": (3, ("conductor_store", "store")),
    "engine": (4, ("multi_agent_conductor", "engine")),
    "gui": (5, ("gui_2", "gui")),
    "api": (5, ("hook_server", "api")),
    "cli": (6, ("cli",)),
}
OURS = {top: layer for layer, (_r, tops) in LAYERS.items() for top in tops}
SDKS = ("google.genai", "openai", "anthropic")


def source_files() -> list[Path]:
    files = []
    for layer, (_rank, tops) in LAYERS.items():
        for top in tops:
            p = ROOT / f"{top}.py"
            if p.exists():
                files.append(p)
            d = ROOT / top
            if d.is_dir():
                files.extend(sorted(d.rglob("*.py")))
    return files


def layer_of(path: Path) -> str:
    rel = path.relative_to(ROOT)
    top = rel.parts[0].removesuffix(".py")
    return OURS[top]


def imports(tree: ast.AST) -> list[tuple[str, int, bool]]:
    """(module, line, at module top level) for every import in the file, lazy ones included."""
    out: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, top) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                out.append((child.module, child.lineno, top))
                out.extend((f"{child.module}.{a.name}", child.lineno, top) for a in child.names)
            # what is not inside a function runs at import time (if/try/with/class bodies)
            visit(child, top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                        ast.Lambda)))
    visit(tree, True)
    return out


FILES = source_files()


def test_the_layers_are_all_found():
    found = {layer_of(p) for p in FILES}
    assert found == set(LAYERS), set(LAYERS) - found
    assert len(FILES) > 40


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down_only(path: Path):
    mine = layer_of(path)
    rank = LAYERS[mine][0]
    bad = []
    for mod, line, _top in imports(ast.parse(path.read_text(encoding="utf-8"))):
        other = OURS.get(mod.split(".")[0])
        if other is None or other == mine:
            continue
        if LAYERS[other][0] >= rank:
            bad.append(f"line {line}: {mine} imports {mod} ({other}, "
                       f"{'beside' if LAYERS[other][0] == rank else 'above'} it)")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imgui_only_in_the_gui_layer_and_sdks_only_lazily_in_providers(path: Path):
    mine = layer_of(path)
    bad = []
    for mod, line, top in imports(ast.parse(path.read_text(encoding="utf-8"))):
        if mod.split(".")[0] == "imgui_bundle" and mine != "gui":
            bad.append(f"line {line}: imgui ({mod}) outside the GUI layer")
        if any(mod == s or mod.startswith(s + ".") for s in SDKS):
            rel = path.relative_to(ROOT).parts
            if rel[0] != "providers":
                bad.append(f"line {line}: model SDK {mod} outside providers/")
            elif top:
                bad.append(f"line {line}: model SDK {mod} imported at module top level "
                           f"(import it inside the provider, so the first frame never waits)")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_files_and_classes_fit_in_one_sitting(path: Path):
    text = path.read_text(encoding="utf-8")
    n = text.count("\n")
    assert n < 800, f"{path.relative_to(ROOT)} has {n} lines (limit 800)"
    big = [f"class {c.name}: {c.end_lineno - c.lineno + 1} lines"
           for c in ast.walk(ast.parse(text)) if isinstance(c, ast.ClassDef)
           and c.end_lineno - c.lineno + 1 >= 400]
    assert not big, f"{path.relative_to(ROOT)}: " + "; ".join(big) + " (limit 400)"


def test_the_checks_catch_what_they_are_for(tmp_path):
    """The import reader sees lazy imports and tells top level from inside a function."""
    tree = ast.parse("import os\nfrom gui_2 import x\n\ndef f():\n    import openai\n"
                     "if True:\n    import anthropic\n")
    got = {(m, top) for m, _l, top in imports(tree)}
    assert ("gui_2", True) in got and ("openai", False) in got and ("anthropic", True) in got
