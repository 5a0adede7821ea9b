"""The docs stand alone and keep up with the code: every settings key documented, links that resolve."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from cli.test_fix_commands import _END, Mention, problem
from packfleet.config import _settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
SCHEMAS: dict[str, _settings._Schema[Any]] = {
    "MasterSettings.config": _settings._MASTER,
    "WorkerSettings.config": _settings._WORKER,
    "ManagerSettings.config": _settings._MANAGER,
}
#: Defaults that depend on the machine, documented in words.
IN_WORDS = {"DisplayName": "the host name"}


def settings_rows() -> dict[str, dict[str, str]]:
    """``{file: {key: default cell}}`` from the tables of docs/settings.md, section by section."""
    rows: dict[str, dict[str, str]] = {}
    section = ""
    for line in (ROOT / "docs" / "settings.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
            rows[section] = {}
        elif section and (match := re.match(r"\| `(\w+)` \| ([^|]+) \|", line)):
            rows[section][match.group(1)] = match.group(2).strip()
    return rows


@pytest.mark.parametrize("file_name", sorted(SCHEMAS))
def test_every_settings_key_is_documented_with_its_default(file_name: str) -> None:
    schema = SCHEMAS[file_name]
    documented = settings_rows().get(file_name, {})
    missing = [key.name for key in schema.keys if key.name not in documented]
    assert not missing, f"docs/settings.md, section {file_name}, lacks {missing}"
    unknown = sorted(set(documented) - {key.name for key in schema.keys})
    assert not unknown, f"docs/settings.md documents keys the code does not have: {unknown}"
    for key in schema.keys:
        default = _settings._default_json(schema, key)
        expected = IN_WORDS.get(key.name) or f"`{json.dumps(default)}`"
        assert documented[key.name] == expected, f"{file_name} {key.name}: default is {expected}"


def test_every_alias_is_documented() -> None:
    text = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    for schema in SCHEMAS.values():
        for key in schema.keys:
            for alias in key.aliases:
                assert f"`{alias}`" in text, f"docs/settings.md does not name {key.name}'s alias {alias}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_a_doc_names_no_issue_and_no_path_of_a_build_machine(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    for pattern in (r"\bissue\s*#?\d+", r"\.\./shared", r"/work/", r"/tmp/", r"shared/DESIGN"):
        found = re.search(pattern, text, re.IGNORECASE)
        assert found is None, f"{doc.name} mentions {found.group(0)!r}" if found else ""


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(doc: Path) -> None:
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", doc.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue
        assert (doc.parent / target).exists(), f"{doc.name} links to {target}, which does not exist"


def test_the_readme_links_every_doc() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for doc in (ROOT / "docs").glob("*.md"):
        assert f"(docs/{doc.name})" in readme, f"README.md does not link docs/{doc.name}"


#: Where a command starts on a shell line: the line's start, after sudo, after && or inside $(...).
_SHELL_START = re.compile(r"(?:^|\bsudo |&& |\$\()(packfleet )(?=\S)")


def doc_commands(doc: Path) -> list[Mention]:
    """Every ``packfleet ...`` command of a doc's code blocks and inline code, as the CLI would parse it."""
    found: list[Mention] = []
    in_block = False
    for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            in_block = not in_block
            continue
        texts = [line.strip()] if in_block else re.findall(r"`(packfleet [^`]+)`", line)
        for text in texts:
            for match in _SHELL_START.finditer(text):
                tail = text[match.end() :]
                cut = _END.search(tail)
                command = "packfleet " + (tail[: cut.start()] if cut else tail)
                if command.split()[1:2] != ["--version"]:  # the root group's own option
                    found.append(Mention(f"{doc.name}:{number}", command))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_command_a_doc_shows_exists(doc: Path) -> None:
    commands = doc_commands(doc)
    problems = [f"{m}: {why}" for m in commands if (why := problem(m))]
    assert problems == []
    if doc.name in ("README.md", "quickstart.md"):
        assert len(commands) > 15  # the extraction sees the cheat sheet
