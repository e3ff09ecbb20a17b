"""The public API is what `__all__` says, and the API reference page documents all of it.

Generic on purpose: modules are found by walking the package and the page's entries by reading
it, so adding, moving or renaming a module needs no change here.
"""

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import keras_reg

API_PAGE = Path(__file__).parent.parent / "docs" / "api.md"

# Public classes and functions defined in a public module but deliberately left out of its
# `__all__`: "module.name" -> why.
NOT_EXPORTED = {
    "keras_reg.attach.layer_filter": "the `layers=` check that pruning.py shares; internal",
    "keras_reg.attach.graph_layers": "the layer walk that pruning.py shares; internal",
    "keras_reg.report.build_report": "the report from paths and values that callbacks.py "
    "shares; internal",
    "keras_reg.strength.model_regularizers": "StrengthScheduler's own lookup; internal",
    "keras_reg.report.rows_from_counts": "the row builder that cli.py shares; internal",
    "keras_reg.patterns.check_m_by_n": "the argument check that pruning.py shares; internal",
    "keras_reg.patterns.check_block_size": "the argument check that pruning.py shares; internal",
    "keras_reg.patterns.check_pooling": "the argument check that pruning.py shares; internal",
}


def modules():
    """Every module of keras_reg, subpackages included, imported."""
    found = [keras_reg]
    for info in pkgutil.walk_packages(keras_reg.__path__, "keras_reg."):
        found.append(importlib.import_module(info.name))
    return found


MODULES = modules()


def is_public(module):
    return not any(part.startswith("_") for part in module.__name__.split("."))


def defined_here(module):
    """The public classes and functions whose definition is in `module` (not imported)."""
    return sorted(
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module.__name__
    )


def api_entries():
    """The page's `::: dotted.path` entries, each with the object it resolves to."""
    entries = {}
    for path in re.findall(r"^:::\s*(\S+)\s*$", API_PAGE.read_text(), flags=re.M):
        parts = path.split(".")
        for split in range(len(parts), 0, -1):  # the longest importable prefix is the module
            try:
                value = importlib.import_module(".".join(parts[:split]))
            except ModuleNotFoundError:
                continue
            for attribute in parts[split:]:
                value = getattr(value, attribute)
            break
        else:
            raise AssertionError(f"::: {path} names no module of keras_reg")
        entries[path] = value
    return entries


def test_the_walk_finds_the_package_modules():
    names = {module.__name__ for module in MODULES}
    assert {"keras_reg", "keras_reg.regularizers", "keras_reg._keras_private"} <= names


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_every_name_in_all_exists(module):
    exported = getattr(module, "__all__", [])
    assert len(set(exported)) == len(exported), "a name twice in __all__"
    assert [name for name in exported if not hasattr(module, name)] == []


@pytest.mark.parametrize("module", [m for m in MODULES if is_public(m)], ids=lambda m: m.__name__)
def test_a_public_module_exports_what_it_defines(module):
    assert hasattr(module, "__all__"), f"{module.__name__} is public and has no __all__"
    left_out = [
        name
        for name in defined_here(module)
        if name not in module.__all__ and f"{module.__name__}.{name}" not in NOT_EXPORTED
    ]
    assert left_out == [], "export them, rename them with a _, or list them in NOT_EXPORTED"


def test_the_exceptions_are_still_needed():
    defined = {
        f"{module.__name__}.{name}": name not in module.__all__
        for module in MODULES
        if is_public(module)
        for name in defined_here(module)
    }
    assert [name for name in NOT_EXPORTED if not defined.get(name)] == []


def test_every_api_page_entry_is_reachable_from_the_package():
    entries = api_entries()
    assert len(entries) >= 10
    for path, value in entries.items():
        name = path.rsplit(".", 1)[-1]
        if name in keras_reg.__all__ and getattr(keras_reg, name) is value:
            continue
        # Or a member of a public submodule documented by its own path: keras_reg.rules.DenseLike.
        sub = path.split(".")[1]
        module = getattr(keras_reg, sub, None) if sub in keras_reg.__all__ else None
        assert inspect.ismodule(module), f"::: {path}: keras_reg.{name} is not public"
        assert name in module.__all__, f"::: {path}: not in keras_reg.{sub}.__all__"
        assert getattr(module, name) is value, f"::: {path} is not keras_reg.{sub}.{name}"


def test_every_public_name_is_on_the_api_page():
    """Each name has an entry, or is another name for an entry's object and says so on the page.

    `keras_reg.l1` is `L1`: L1's entry documents it, once the page names `keras_reg.l1`.
    """
    text = API_PAGE.read_text()
    entries = api_entries()
    missing = []
    for name in keras_reg.__all__:
        if name == "__version__":
            continue
        value = getattr(keras_reg, name)
        own = any(path.rsplit(".", 1)[-1] == name for path in entries)
        if inspect.ismodule(value):  # a submodule: its own entry, or entries of its members
            own = any(
                p == f"keras_reg.{name}" or p.startswith(f"keras_reg.{name}.") for p in entries
            )
        alias = any(value is entry for entry in entries.values()) and f"`keras_reg.{name}`" in text
        if not (own or alias):
            missing.append(name)
    assert missing == [], f"add `::: keras_reg.<module>.<name>` entries to {API_PAGE.name}"


def test_the_version_is_the_changelogs_newest():
    """`__version__` is the newest CHANGELOG heading: released as dated, in development as .devN."""
    changelog = (Path(__file__).parent.parent / "CHANGELOG.md").read_text()
    heading = re.search(r"^## (\d+\.\d+\.\d+) \((.*)\)$", changelog, flags=re.M)
    version, status = heading.groups()
    if status == "in development":
        assert re.fullmatch(re.escape(version) + r"\.dev\d+", keras_reg.__version__)
    else:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", status), status
        assert keras_reg.__version__ == version
    # Every earlier version is released, with a date (or the first release's line).
    for older, when in re.findall(r"^## (\d+\.\d+\.\d+)(?: \((.*)\))?$", changelog, flags=re.M)[1:]:
        assert when == "" or re.fullmatch(r"\d{4}-\d{2}-\d{2}", when), (older, when)
