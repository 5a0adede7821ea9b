"""Every ``packfleet ...`` command that the source tells a person to run exists, with its options.

A fix string is read when something already went wrong; one naming a command that does not exist
(``packfleet project list`` for ``projects list``) sends the reader nowhere. This test reads every
string literal and docstring under ``src/packfleet``, finds each ``packfleet <words>`` in it, and
resolves the words through the real click tree: each group word must name a subcommand, and each
``--option`` written after the command must be one of that command's options.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

import packfleet
from packfleet.cli import cli

SRC = Path(packfleet.__file__).parent
#: Stands for an f-string's ``{...}``: any word is accepted where it appears.
HOLE = "\x00"
#: Options of the root group, each followed by its value.
ROOT_OPTIONS = {"--home", "--location", "--master", "--master-cert", "--admin-cert", "--admin-key"}
#: Words that follow "packfleet " in prose rather than in a command ("packfleet pins each peer").
PROSE = {
    "Scale", "adds", "as", "can", "cannot", "certificate", "certificates", "checkout", "counts",
    "defaults", "demo", "does", "error", "errors", "has", "home", "join", "keeps", "maintainers",
    "makes", "maps", "never", "otherwise", "pins", "raises", "reads", "refuses", "runs", "supports",
    "unit", "uses", "version", "warns", "writes",
    # "packfleet pooled" and "packfleet fresh" are the bench's names of the two isolations.
    "and", "with", "pooled", "fresh",
}  # fmt: skip
#: Literals that start like a command but are not one, with the reason.
NOT_COMMANDS = {
    # The domain-separation label that a certificate renewal proof signs (protocol._messages).
    "packfleet worker certificate renewal",
}
# A command ends where the sentence or the shell line goes on to something else.
_END = re.compile(r"\n|;|,|\(|\)|&&|\||`|'|\"|\s#|\s(?:or|and|then|with)\s|(?=\bpackfleet\s)")


@dataclass(frozen=True)
class Mention:
    where: str
    text: str

    def __str__(self) -> str:
        return f"{self.where}: {self.text.replace(HOLE, '{…}')!r}"


def _literals(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Every string literal (docstrings included); an f-string with HOLE for each placeholder."""
    inside_fstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            inside_fstrings.update(id(part) for part in node.values)
            text = "".join(str(p.value) if isinstance(p, ast.Constant) else HOLE for p in node.values)
            yield node.lineno, text
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in inside_fstrings:
            yield node.lineno, node.value


def mentions() -> list[Mention]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for line, text in _literals(ast.parse(path.read_text(), str(path))):
            for match in re.finditer(r"(?<![\w./-])packfleet (?=\S)", text):
                tail = text[match.end() :]
                end = _END.search(tail)
                command = "packfleet " + (tail[: end.start()] if end else tail)
                if command.strip() not in NOT_COMMANDS:
                    found.append(Mention(f"{path.relative_to(SRC.parent)}:{line}", command.strip()))
    return found


def _options(command: click.Command) -> set[str]:
    return {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"-h", "--help"}


def problem(mention: Mention) -> str | None:
    """Why ``mention`` names no real command, or None when it does (or is prose)."""
    words = []
    for word in mention.text.split()[1:]:
        if word in ("\\", "...", "…"):  # a shell line continues, or "and so on"
            break
        word = word.strip("[]").rstrip(".:")
        if HOLE in word and not word.startswith(HOLE):  # "list{fix}": the rest is unknown
            words.append(word.split(HOLE)[0])
            words.append(HOLE)
            break
        words.append(word)
    while words and words[0] in ROOT_OPTIONS:
        words = words[2:]
    if not words or HOLE in words[0]:
        return None
    if words[0] not in cli.commands:
        return None if words[0] in PROSE else f"there is no command {words[0]!r}"
    command: click.Command = cli
    path = ["packfleet"]
    while isinstance(command, click.Group):
        if not words or words[0].startswith(("-", "<", HOLE)):
            return None  # the group itself ("see packfleet manager token")
        # "cert import/delete" names two subcommands; the first leads on.
        names = words[0].split("/")
        missing = [name for name in names if name not in command.commands]
        if missing:
            subcommands = ", ".join(sorted(command.commands))
            return f"{' '.join(path)} has no subcommand {missing[0]!r} (it has {subcommands})"
        command, path, words = command.commands[names[0]], [*path, names[0]], words[1:]
    known = _options(command)
    for word in words:
        if word == HOLE:
            break
        option = word.rstrip(".:").split("=", 1)[0]
        if option.startswith("-") and option not in {"-", "--"} and HOLE not in option:
            if option not in known:
                return f"{' '.join(path)} has no option {option!r}"
    return None


def test_the_source_mentions_commands_at_all() -> None:
    texts = {m.text for m in mentions()}
    assert len(texts) > 50
    assert any(t.startswith("packfleet manager worker connect") for t in texts)


def test_every_command_in_the_source_exists() -> None:
    broken = [f"{m}: {why}" for m in mentions() if (why := problem(m)) is not None]
    assert broken == []


@pytest.mark.parametrize(
    "text",
    [
        "packfleet project list",
        "packfleet projects list --folder default",
        "packfleet manager principal list",
        "packfleet manager projects",
        "packfleet execution list",
        "packfleet master init --admin-only",
        "packfleet --home /srv/m settings sett master PortNumber 1",
    ],
)
def test_the_check_catches_a_broken_command(text: str) -> None:
    assert problem(Mention("example", text)) is not None


@pytest.mark.parametrize(
    "text",
    [
        "packfleet projects list",
        "packfleet --home /srv/m manager worker connect worker1 --token",
        "packfleet deploy <project folder> [--folder NAME]",
        f"packfleet settings set {HOLE} MasterHttpsCertThumbprint {HOLE}",
        "packfleet pins each peer's certificate",
    ],
)
def test_the_check_accepts_real_commands_and_prose(text: str) -> None:
    assert problem(Mention("example", text)) is None
