"""Reading the JSON files a person may have edited by hand, with errors that point into the file."""

from __future__ import annotations

import json
from pathlib import Path

from packfleet.errors import SettingsError


def read_json(path: Path, *, what: str, missing_fix: str | None = None) -> object:
    """Parse ``path`` as JSON; return ``None`` when it is missing and ``missing_fix`` is ``None``.

    A UTF-8 byte-order mark is accepted because Notepad writes one when an administrator edits a
    copied SSIS settings file. A key given twice is refused: ``json`` would silently keep the last,
    and the administrator would be editing the one that does nothing.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        if missing_fix is None:
            return None
        raise SettingsError(f"{path} does not exist: this home has no {what}", fix=missing_fix) from None
    except UnicodeDecodeError as exc:
        raise SettingsError(
            f"{path}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x})",
            fix=f"save {path} as UTF-8",
        ) from None
    except OSError as exc:
        raise SettingsError(
            f"cannot read {path}: {exc.strerror or exc}",
            fix=f"run as the user that owns {path.parent}",
        ) from exc
    try:
        return json.loads(text, object_pairs_hook=lambda pairs: _no_duplicates(path, pairs))
    except json.JSONDecodeError as exc:
        raise SettingsError(
            f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
            fix=f"correct {path} at line {exc.lineno} (a trailing comma or a missing quote is usual)",
        ) from None


def json_kind(value: object) -> str:
    """What a parsed JSON value was in the file, in JSON's words: "an array", "a string"..."""
    kinds = [(bool, "a boolean"), (dict, "an object"), (list, "an array"), (str, "a string")]
    for python_type, name in kinds:
        if isinstance(value, python_type):
            return name
    return "null" if value is None else "a number"


def _no_duplicates(path: Path, pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise SettingsError(f"{path}: key {key!r} appears twice", fix=f"keep one {key!r} in {path}")
        result[key] = value
    return result
