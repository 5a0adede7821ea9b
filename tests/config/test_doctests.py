"""The examples in the config layer's docstrings are true."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

from packfleet.config import _home, _timespan


@pytest.mark.parametrize("module", [_home, _timespan], ids=lambda m: m.__name__)
def test_docstring_examples(module: ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
