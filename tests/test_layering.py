"""Layering: the methods and the loss-term leaf never import the training loop (which imports them)."""

from __future__ import annotations

import ast
from pathlib import Path

import fairlora

PACKAGE = Path(fairlora.__file__).parent


def module_file(module: str) -> Path | None:
    """The source file of a `fairlora.*` module (a package's __init__), None when there is none."""
    path = PACKAGE.parent.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(file: Path, module: str) -> set[str]:
    """`fairlora.*` modules a file imports anywhere (in functions too); `from x import y` counts x.y."""
    package = module if file.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("fairlora.") and module_file(name) is not None}


def reachable(start: list[str]) -> dict[str, str]:
    """Every `fairlora.*` module reachable by imports from `start`, with the module that imported it."""
    seen, stack = {name: "" for name in start}, list(start)
    while stack:
        module = stack.pop()
        for name in imported_modules(module_file(module), module):
            if name not in seen:
                seen[name] = module
                stack.append(name)
    return seen


def package_modules(package: str) -> list[str]:
    """Dotted names of every module under a `fairlora` subpackage."""
    root = PACKAGE / package
    return [
        ".".join(("fairlora", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        for path in root.rglob("*.py")
    ]


def test_methods_and_regularizers_never_import_training():
    start = package_modules("methods") + package_modules("regularizers")
    assert "fairlora.methods.aflora.freezer" in start and "fairlora.regularizers.terms" in start
    seen = reachable(start)
    training = {name: by for name, by in seen.items() if name.startswith("fairlora.training")}
    assert not training, f"imported (module: by): {training}"


def test_the_checker_sees_training_imports():
    seen = reachable(["fairlora.pipeline"])  # the pipeline trains: the check must find it
    assert "fairlora.training.trainer" in seen and "fairlora.regularizers.terms" in seen
