"""The package's names: every module says what it exports (`__all__`), and
`fbx.__all__` is what the package exports, documented, and all the README
and docs/*.md mention."""

import ast
import importlib
import inspect
import pathlib
import pkgutil
import re
import types

import pytest

import fbexplorer as fbx

ROOT = pathlib.Path(__file__).parent.parent
PACKAGE = ROOT / "fbexplorer"
MODULES = ["fbexplorer"] + [
    m.name for m in pkgutil.walk_packages([str(PACKAGE)], prefix="fbexplorer.")
]
# IPython's hook for `%load_ext fbexplorer`, not a name to import.
NOT_EXPORTED = {"load_ipython_extension"}


@pytest.mark.parametrize("name", MODULES)
def test_every_module_lists_its_names_and_each_exists(name):
    module = importlib.import_module(name)
    names = getattr(module, "__all__", None)
    assert isinstance(names, list), f"{name} has no __all__ list"
    assert all(isinstance(n, str) for n in names), name
    assert len(names) == len(set(names)), f"{name}.__all__ lists a name twice"
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what {name} does not have: {missing}"


def imports_between_modules():
    """`(module, name, file:line)` of every `from fbexplorer.M import name` in the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fbexplorer."):
                for alias in node.names:
                    yield node.module, alias.name, f"{path.relative_to(ROOT)}:{node.lineno}"


def test_a_public_name_one_module_takes_from_another_is_in_its_all():
    unlisted = []
    for module, name, where in imports_between_modules():
        if name.startswith("_") or f"{module}.{name}" in MODULES:  # a submodule itself
            continue
        if name not in importlib.import_module(module).__all__:
            unlisted.append(f"{where}: {name} from {module}")
    assert not unlisted, "add these names to their module's __all__:\n" + "\n".join(unlisted)


def exported() -> set:
    """The names `import fbexplorer` gives, less submodules (but `zoo`) and dunders."""
    return {
        n
        for n, v in vars(fbx).items()
        if not n.startswith("_") and (not isinstance(v, types.ModuleType) or n == "zoo")
    } - NOT_EXPORTED


def test_fbx_all_is_what_the_package_exports_and_each_is_documented():
    assert sorted(fbx.__all__) == sorted(exported())
    undocumented = [n for n in fbx.__all__ if not inspect.getdoc(getattr(fbx, n))]
    assert not undocumented, f"no docstring: {undocumented}"


def test_every_fbx_name_the_docs_mention_is_exported():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    unknown = {
        f"{page.relative_to(ROOT)}: fbx.{name}"
        for page in pages
        for name in re.findall(r"\bfbx\.([A-Za-z_]\w*)", page.read_text())
        if name not in fbx.__all__
    }
    assert not unknown, sorted(unknown)
