"""One-way layers, read statically (`ast`) from the source: the core (everything in `mpg/` but
`mpg/eval/`, `mpg/server/`, `mpg/cli.py` and `mpg/__main__.py`) imports neither `mpg.eval`, `mpg.server`
nor the benchmarks, and nothing under `mpg/` imports the benchmarks. Imports inside functions count."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mpg"
OUTSIDE_CORE = ("mpg.eval", "mpg.server", "mpg.cli", "mpg.__main__")
CORE_MUST_NOT_IMPORT = ("mpg.eval", "mpg.server", "benchmarks")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def imported(name: str, path: Path) -> set[str]:
    """Every module `path` (module `name`) imports, relative imports resolved; of `from X import y`, X and,
    when y is a module of the package, X.y."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            out |= {module} | {f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in MODULES}
    return out


def violations(rule) -> set[tuple[str, str]]:
    """(importing module, imported module) pairs where `rule(importer)` lists the imported one's prefix."""
    return {
        (name, target)
        for name, path in MODULES.items()
        for target in imported(name, path)
        if within(target, rule(name))
    }


@pytest.mark.parametrize("name", sorted(set(MODULES) - {"mpg.__main__"}))  # importing that runs the CLI
def test_every_module_imports(name):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:  # an extra (lm-eval, fastapi, ...) this environment lacks
        if (e.name or "").split(".")[0] in ("mpg", "benchmarks"):
            raise
        pytest.skip(f"{name} needs {e.name}, not installed")


def test_core_imports_neither_eval_server_nor_benchmarks():
    assert violations(lambda name: () if within(name, OUTSIDE_CORE) else CORE_MUST_NOT_IMPORT) == set()


def test_the_evaluation_and_the_server_use_only_public_names_of_the_core():
    """mpg.eval and mpg.server import no underscore name from a core module, and neither imports the other."""
    found = []
    for name, path in MODULES.items():
        if not within(name, ("mpg.eval", "mpg.server")):
            continue
        other = "mpg.server" if within(name, ("mpg.eval",)) else "mpg.eval"
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = package.split(".")
            src = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            if not node.level:
                src = node.module or ""
            if within(src, (other,)):
                found.append((name, src))
            if within(src, ("mpg",)) and not within(src, ("mpg.eval", "mpg.server")):
                found += [(name, f"{src}.{a.name}") for a in node.names if a.name.startswith("_")]
    assert found == []


def test_nothing_in_the_package_imports_the_benchmarks():
    assert violations(lambda name: ("benchmarks",)) == set()


def test_the_scan_sees_relative_and_late_imports(tmp_path):
    """The checker itself: a relative import inside a function is resolved and counted."""
    path = tmp_path / "x.py"
    path.write_text(
        "def f():\n    from ..eval.likelihood import policy_logprobs\n    import benchmarks.common\n"
        "from .. import eval\n"
    )
    assert imported("mpg.samplers.x", path) == {"mpg.eval.likelihood", "benchmarks.common", "mpg", "mpg.eval"}


def test_python_dash_m_mpg_is_the_mpg_command():
    """`python -m mpg` (the one module the import test leaves out) runs the CLI."""
    out = subprocess.run([sys.executable, "-m", "mpg", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "generate" in out.stdout and "serve" in out.stdout
