"""The examples in the package's docstrings are true: every module that has one, found, not listed."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import packfleet

#: Entry points that run the program when imported.
SKIP = {"packfleet.__main__", "packfleet.bench.__main__"}


def modules() -> list[str]:
    names = ["packfleet"]
    for info in pkgutil.walk_packages(packfleet.__path__, "packfleet."):
        if info.name not in SKIP:
            names.append(info.name)
    return sorted(names)


def examples(name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    return [test for test in finder.find(module) if test.examples]


WITH_EXAMPLES = [name for name in modules() if examples(name)]


def test_every_module_with_an_example_is_collected() -> None:
    # A ">>> " in a source file that the finder does not see (a comment, a nested function) would
    # silently never run: every file that shows one must be among the modules collected.
    src = Path(packfleet.__file__).parent
    showing = set()
    for path in src.rglob("*.py"):
        if ">>> " in path.read_text(encoding="utf-8"):
            parts = list(path.relative_to(src.parent).with_suffix("").parts)
            showing.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    assert showing - set(WITH_EXAMPLES) == set()
    assert len(WITH_EXAMPLES) >= 20


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples(name: str) -> None:
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests = examples(name)
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    # Illustrations that need a live master or a home are marked +SKIP; every other example ran.
    runnable = sum(1 for t in tests for e in t.examples if not e.options.get(doctest.SKIP))
    assert (result.failed, result.attempted) == (0, runnable)
