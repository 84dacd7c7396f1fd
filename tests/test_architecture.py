"""The package's structure: no import cycles between its modules, small modules, imports at the top,
no call that passes a long list of positional arguments.

Run ``python -m pytest tests/test_architecture.py -q`` (or ``ruff check``) to see the structure hold;
``python tests/test_architecture.py`` prints the import graph.
"""

import ast
from pathlib import Path

from conftest import ROOT

PKG = ROOT / "lib" / "vitedit"
MAX_SWEEP_MODULE_LINES = 300
MAX_MODULE_LINES = 400
DATA_TABLES = {"schema.py"}  # the parameter schema: one entry per parameter, no logic
MAX_POSITIONAL_ARGS = 7  # more: pass an object (models.Runner, evaluation.Evaluator) or keywords


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, top_level_only: bool = False) -> set[str]:
    """vitedit modules imported by a module (function-level imports too, unless ``top_level_only``)."""
    tree = ast.parse(path.read_text())
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("vitedit"):
                for alias in node.names:  # `from . import x` imports the module vitedit.x
                    sub = f"{mod}.{alias.name}"
                    out.add(
                        sub
                        if (PKG.parent / (sub.replace(".", "/") + ".py")).is_file()
                        or (PKG.parent / sub.replace(".", "/")).is_dir()
                        else mod
                    )
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("vitedit")}
    return out - {me}


def graph() -> dict[str, set[str]]:
    return {module_name(f): imports_of(f) for f in sorted(PKG.rglob("*.py"))}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if m == n.rsplit(".", 1)[0] and n.endswith("__main__"):
                continue
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m in g and state.get(m) is None:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if state.get(n) is None:
            found = visit(n)
            if found:
                return found
    return None


def test_no_import_cycles_even_through_function_level_imports():
    g = graph()
    # a package's __init__ re-exports its submodules; the submodules must not import it back
    packages = {module_name(f) for f in PKG.rglob("__init__.py")} - {"vitedit"}
    for name, deps in g.items():
        for pkg in packages:
            if name.startswith(pkg + "."):
                assert pkg not in deps, f"{name} imports its own package's __init__"
    g = {k: {d for d in v if not (k in packages and d.startswith(k + "."))} for k, v in g.items()}
    assert find_cycle(g) is None, f"import cycle: {' -> '.join(find_cycle(g))}"


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_sweep_package_modules_stay_small():
    sizes = {f.name: len(f.read_text().splitlines()) for f in (PKG / "sweep").glob("*.py")}
    big = {k: v for k, v in sizes.items() if v > MAX_SWEEP_MODULE_LINES}
    assert not big, f"sweep modules over {MAX_SWEEP_MODULE_LINES} lines: {big}"


def test_every_module_stays_small():
    """One concept per module: none over MAX_MODULE_LINES lines, data tables apart."""
    sizes = {
        str(f.relative_to(PKG)): len(f.read_text().splitlines())
        for f in PKG.rglob("*.py")
        if f.name not in DATA_TABLES
    }
    big = {k: v for k, v in sizes.items() if v > MAX_MODULE_LINES}
    assert not big, f"modules over {MAX_MODULE_LINES} lines (split them by concept): {big}"


def long_positional_calls(path: Path, root: Path = PKG) -> list[str]:
    """Calls in ``path`` that pass more than MAX_POSITIONAL_ARGS positional arguments."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and len(node.args) > MAX_POSITIONAL_ARGS:
            out.append(f"{path.relative_to(root)}:{node.lineno} {ast.unparse(node.func)}")
    return out


def test_no_call_passes_a_long_list_of_positional_arguments():
    """The same (model, images, config, batch size, device) group threaded through every call was
    what made 8-13 positional arguments common; an object or keywords say what each one is."""
    found = [c for f in sorted(PKG.rglob("*.py")) for c in long_positional_calls(f)]
    assert not found, f"calls with > {MAX_POSITIONAL_ARGS} positional arguments: {found}"


def test_the_positional_check_finds_a_long_call(tmp_path):
    f = tmp_path / "probe.py"
    f.write_text("f(1, 2, 3, 4, 5, 6, 7, 8)\ng(1, 2)\nh(*range(9))\n")
    assert long_positional_calls(f, tmp_path) == ["probe.py:1 f"]


def test_function_level_imports_say_why():
    """An import inside a function is allowed for a measured reason (torch/timm/wandb import time on
    a CLI or job path), stated in a comment on the lines just above it."""
    unexplained = []
    for f in sorted(PKG.rglob("*.py")):
        lines = f.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        context = " ".join(lines[max(0, inner.lineno - 4) : inner.lineno])
                        if "lazy" not in context:
                            unexplained.append(f"{f.relative_to(PKG)}:{inner.lineno}")
    assert not unexplained, (
        f"function-level imports without a '# lazy: <reason>' comment: {unexplained}"
    )


if __name__ == "__main__":
    for mod, deps in graph().items():
        print(f"{mod}: {', '.join(sorted(deps)) or '-'}")
