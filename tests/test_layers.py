"""The house's structure, checked: the Python package imports only down its layer list (and
never inside a function, but for optional dependencies), no project import circle, and the
kernels include nothing above csrc/base."""
from __future__ import annotations

import ast
import contextlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "python" / "fastlm"
CSRC = ROOT / "csrc"

# lowest first: a unit (a top-level module or subpackage of fastlm) imports only from units in
# earlier layers, or from within itself. fastlm/__init__.py, the public face, may import anything.
LAYERS = [
    ["_C", "_version"],
    ["_runtime"],
    ["kernels"],
    ["config"],
    ["hub", "chat", "rope", "progress"],
    ["tokenizer"],
    ["formats"],
    ["quant"],
    ["models"],
    ["slots"],
    ["structured"],
    ["tool_calls"],
    ["sampling", "outputs"],
    ["generation"],
    ["scheduler"],
    ["engine"],
    ["tools"],
    ["server"],
    ["cli"],
    ["__main__"],
]
LAYER_OF = {unit: i for i, units in enumerate(LAYERS) for unit in units}
# modules that import the rest on first use, for startup time (`fastlm --help`, `import fastlm`);
# their imports still run down the layers
LAZY = {"fastlm", "fastlm.cli"}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_imports(path: Path, tree: ast.AST | None = None):
    """(imported fastlm module, line, inside a function?) for each import of the project."""
    tree = tree or ast.parse(path.read_text(), str(path))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for a in child.names:
                    if a.name == "fastlm" or a.name.startswith("fastlm."):
                        yield a.name, child.lineno, in_function
            elif isinstance(child, ast.ImportFrom):
                if child.level:  # relative: resolve against this module's package
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                if mod == "fastlm" or mod.startswith("fastlm."):
                    if mod == "fastlm":  # from fastlm import _C, kernels: each name is a module
                        for a in child.names:
                            yield f"fastlm.{a.name}", child.lineno, in_function
                    else:
                        yield mod, child.lineno, in_function
            yield from visit(child, inner)

    yield from visit(tree, False)


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def violations(files) -> list[str]:
    out = []
    for path in files:
        me = module_name(path)
        mine = unit_of(me)
        for mod, line, in_function in project_imports(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            if in_function and me not in LAZY:
                out.append(f"{where}: function-local import of {mod} (import project modules at the top)")
            if me == "fastlm":
                continue
            theirs = unit_of(mod)
            if theirs == mine:
                continue
            if mine not in LAYER_OF or theirs not in LAYER_OF:
                out.append(f"{where}: {mine or me} or {theirs} is in no layer of tests/test_layers.py")
            elif LAYER_OF[theirs] >= LAYER_OF[mine]:
                out.append(f"{where}: {me} (layer {LAYER_OF[mine]}, {mine}) imports {mod} "
                           f"(layer {LAYER_OF[theirs]}, {theirs}): imports run down the layer list only")
    return out


def python_files():
    return sorted(PACKAGE.rglob("*.py"))


def test_python_imports_run_down_the_layers():
    bad = violations(python_files())
    assert not bad, "\n".join(bad)


def test_no_import_circle():
    graph: dict[str, set[str]] = {}
    names = {module_name(p) for p in python_files()}
    for p in python_files():
        deps = set()
        for mod, _, _ in project_imports(p):
            while mod not in names and "." in mod:  # from fastlm.formats.gguf import X -> that module
                mod = mod.rpartition(".")[0]
            if mod in names and mod != module_name(p):
                deps.add(mod)
        graph[module_name(p)] = deps
    # a package's __init__ that re-exports its own modules is not a circle with them: Python
    # runs the __init__ first either way; count only edges that leave a package or go up to it
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if n.startswith(d + ".") :  # a module importing its own package's __init__
                continue
            if state.get(d) == 1:
                cycle = stack[stack.index(d):] + [d]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


@contextlib.contextmanager
def planted(path: Path, text: str):
    """A file planted in the tree for one check, then removed."""
    path.write_text(text)
    try:
        yield path
    finally:
        path.unlink()


def test_the_layer_check_catches_an_upward_import():
    """A planted upward import and a function-local one both fail the check (so it can fail)."""
    with planted(PACKAGE / "formats" / "_planted_for_test.py",
                 "from fastlm.engine import Engine\n\n\ndef f():\n    from fastlm import kernels\n") as p:
        bad = violations([p])
    assert any("imports fastlm.engine" in b for b in bad), bad
    assert any("function-local import of fastlm.kernels" in b for b in bad), bad


# ---- native ----

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
# csrc folders, lowest first: a file includes only from its own folder and those before it
NATIVE_LAYERS = ["base", "kernels", "model", "runtime", "bindings"]


def include_violations(files) -> list[str]:
    out = []
    for path in files:
        rel = path.relative_to(CSRC)
        mine = rel.parts[0]
        for inc in INCLUDE.findall(path.read_text()):
            top = inc.split("/")[0]
            if top not in NATIVE_LAYERS:
                if top == "cuda" and mine == "bindings":  # the CUDA executor sits beside runtime/
                    continue
                if "/" in inc or mine not in NATIVE_LAYERS:
                    out.append(f"csrc/{rel}: includes {inc}, outside the native layers")
                continue
            if NATIVE_LAYERS.index(top) > NATIVE_LAYERS.index(mine):
                out.append(f"csrc/{rel}: includes {inc} ({top} sits above {mine})")
    return out


def native_files():
    return sorted(p for p in CSRC.rglob("*") if p.suffix in (".h", ".cpp", ".inc", ".cuh"))


def test_native_includes_run_down_the_layers():
    bad = include_violations(native_files())
    assert not bad, "\n".join(bad)


def test_kernels_include_only_base():
    bad = []
    for p in sorted((CSRC / "kernels").iterdir()):
        for inc in INCLUDE.findall(p.read_text()):
            if inc.split("/")[0] not in ("base", "kernels"):
                bad.append(f"csrc/kernels/{p.name}: includes {inc}")
    assert not bad, "\n".join(bad)


def test_the_include_check_catches_an_upward_include():
    with planted(CSRC / "kernels" / "_planted_for_test.h", '#include "runtime/model.h"\n') as p:
        bad = include_violations([p])
    assert bad and "runtime sits above kernels" in bad[0], bad


def test_cuda_sources_include_nothing_above_model():
    """cuda/ is the device executor: it stands on base, kernels and model, never on the CPU
    executor or the bindings."""
    bad = []
    for p in sorted((ROOT / "cuda").iterdir()):
        if p.suffix not in (".h", ".cpp", ".cu", ".cuh"):
            continue
        for inc in INCLUDE.findall(p.read_text()):
            if inc.split("/")[0] in ("runtime", "bindings"):
                bad.append(f"cuda/{p.name}: includes {inc}")
    assert not bad, "\n".join(bad)
