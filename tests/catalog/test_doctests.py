"""The examples in the catalog's docstrings are true."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

from packfleet.catalog import _base, _engine, _records


@pytest.mark.parametrize("module", [_base, _engine, _records], ids=lambda m: m.__name__)
def test_docstring_examples(module: ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
