"""packfleet.toml parsing, parameter resolution and masking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from packfleet.errors import PackageError
from packfleet.packages import (
    PackageSpec,
    ParameterSpec,
    Project,
    load_project,
    mask_parameters,
    parse_manifest,
    resolve_parameters,
)

from .conftest import EXAMPLE

HEAD = '[project]\nname = "p"\nversion = "1"\n'
PYTHON = '[packages.job]\nkind = "python"\nentry = "m:main"\n'
DB = '[parameters.db]\ndefault = "sqlite://"\n'


def sql(file: str) -> str:
    return f'[packages.s]\nkind = "sql"\nfile = "{file}"\nconnection = "db"\n'


def test_the_sample_project_loads() -> None:
    project = load_project(EXAMPLE)

    assert (project.name, project.version) == ("etl", "1.0.0")
    assert set(project.packages) == {"load", "summary", "fail", "sleep", "noop"}
    assert project.packages["summary"].kind == "sql"
    assert project.packages["summary"].connection == "target_db"
    assert project.packages["noop"].isolation == "pooled"
    assert project.packages["load"].isolation == "fresh"
    assert project.packages["load"].parameters["batch_size"] == ParameterSpec(
        "batch_size", "int", 500, False, False
    )
    assert project.parameters["notify_token"].sensitive


def test_project_round_trips_through_json() -> None:
    project = load_project(EXAMPLE)
    document = json.loads(json.dumps(project.to_dict()))

    assert Project.from_dict(document) == project
    load = project.packages["load"]
    assert PackageSpec.from_dict(json.loads(json.dumps(load.to_dict()))) == load


def test_a_leased_spec_is_checked_once_and_the_same_object_comes_back_for_an_equal_one() -> None:
    load = load_project(EXAMPLE).packages["load"]
    wire = json.loads(json.dumps(load.to_dict()))

    first = PackageSpec.from_wire(wire)
    wire["max_tasks_per_process"] = 7  # the caller's dict changes: what was remembered does not
    again = PackageSpec.from_wire(json.loads(json.dumps(load.to_dict())))
    changed = PackageSpec.from_wire(wire)

    assert first == load and again is first
    assert changed.max_tasks_per_process == 7 and changed is not first
    wire["isolation"] = "shared"
    with pytest.raises(PackageError, match="malformed package 'load' document"):
        PackageSpec.from_wire(wire)


@pytest.mark.parametrize(
    "document",
    [
        {"name": "x"},
        {
            "name": "x",
            "kind": "python",
            "entry": None,
            "file": None,
            "connection": None,
            "isolation": "shared",
            "max_tasks_per_process": 1,
            "parameters": [],
        },
        {
            "name": "x",
            "kind": "python",
            "entry": None,
            "file": None,
            "connection": None,
            "isolation": "fresh",
            "max_tasks_per_process": 0,
            "parameters": [],
        },
    ],
)
def test_malformed_package_documents_are_refused(document: dict[str, object]) -> None:
    with pytest.raises(PackageError, match="malformed package 'x' document"):
        PackageSpec.from_dict(document)


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("[project\n", "packfleet.toml: not valid TOML", "line 1"),
        (PYTHON, "[top level]", "the [project] table is required"),
        (HEAD + PYTHON + "[pakages.x]\n", "[top level]", "unknown key 'pakages' (did you mean 'packages'?)"),
        (HEAD, "[top level]", "at least one [packages.<name>] table is required"),
        ('[project]\nname = "a b"\nversion = "1"\n' + PYTHON, "[project] key 'name'", "expected letters"),
        ('[project]\nname = "p"\n' + PYTHON, "[project] key 'version'", "is required"),
        (
            '[project]\nname = "p"\nversion = 1\n' + PYTHON,
            "[project] key 'version'",
            "expected a string, got an integer 1",
        ),
        (HEAD + '[packages.job]\nentry = "m:f"\n', "[packages.job] key 'kind'", "is required"),
        (
            HEAD + '[packages.job]\nkind = "pyton"\nentry = "m:f"\n',
            "[packages.job] key 'kind'",
            "did you mean 'python'?",
        ),
        (
            HEAD + PYTHON + 'entrypoint = "m:f"\n',
            "[packages.job]",
            "unknown key 'entrypoint' (did you mean 'entry'?)",
        ),
        (
            HEAD + '[packages.job]\nkind = "python"\nentry = "m.main"\n',
            "[packages.job] key 'entry'",
            "expected 'module:function', got 'm.main'",
        ),
        (HEAD + PYTHON + 'file = "x.sql"\n', "[packages.job] key 'file'", "applies only to kind = 'sql'"),
        (
            HEAD + PYTHON + 'isolation = "shared"\n',
            "[packages.job] key 'isolation'",
            "expected one of fresh, pooled",
        ),
        (
            HEAD + PYTHON + "max_tasks_per_process = 5\n",
            "[packages.job] key 'max_tasks_per_process'",
            "applies only to isolation = 'pooled'",
        ),
        (
            HEAD + PYTHON + 'isolation = "pooled"\nmax_tasks_per_process = 0\n',
            "key 'max_tasks_per_process'",
            "expected a whole number >= 1",
        ),
        (
            HEAD + '[packages.s]\nkind = "sql"\nfile = "a.sql"\n',
            "[packages.s] key 'connection'",
            "is required",
        ),
        (
            HEAD + '[packages.s]\nkind = "sql"\nfile = "a.sql"\nconnection = "db"\n',
            "[packages.s] key 'connection'",
            "names no parameter: 'db'",
        ),
        (
            HEAD + '[parameters.db]\ntype = "int"\ndefault = 1\n' + sql("a.sql"),
            "key 'connection'",
            "must be of type 'string'",
        ),
        (
            HEAD + DB + sql("../a.sql"),
            "[packages.s] key 'file'",
            "must not contain '.', '..'",
        ),
        (
            HEAD + DB + sql("/a.sql"),
            "[packages.s] key 'file'",
            "must be relative",
        ),
        (
            HEAD + '[parameters.n]\ntype = "integer"\n' + PYTHON,
            "[parameters.n] key 'type'",
            "did you mean 'int'?",
        ),
        (
            HEAD + '[parameters.n]\ntype = "int"\ndefault = "5"\n' + PYTHON,
            "[parameters.n] key 'default'",
            "expected an integer, got a string '5'",
        ),
        (
            HEAD + '[parameters.n]\ntype = "int"\ndefault = true\n' + PYTHON,
            "[parameters.n] key 'default'",
            "expected an integer",
        ),
        (
            HEAD + '[parameters.n]\ntype = "int"\ndefault = 5\nrequired = true\n' + PYTHON,
            "[parameters.n] key 'required'",
            "cannot have a default",
        ),
        (HEAD + "[parameters.n]\nsensitve = true\n" + PYTHON, "[parameters.n]", "did you mean 'sensitive'?"),
        (HEAD + "[parameters.1n]\n" + PYTHON, "[parameters.1n]", "not starting with a digit"),
        (
            HEAD + "[parameters.n]\n" + PYTHON + "[packages.job.parameters.n]\n",
            "[packages.job] key 'parameters'",
            "'n' is already a project parameter",
        ),
    ],
)
def test_manifest_errors_name_the_table_key_and_problem(text: str, where: str, what: str) -> None:
    with pytest.raises(PackageError) as caught:
        parse_manifest(text, source="packfleet.toml")

    message = caught.value.message
    assert message.startswith("packfleet.toml")
    assert where in message
    assert what in message
    assert caught.value.fix == "edit packfleet.toml"


def test_a_parameter_without_default_is_required() -> None:
    project = parse_manifest(HEAD + '[parameters.n]\ntype = "float"\n' + PYTHON, source="t")
    assert project.parameters["n"] == ParameterSpec("n", "float", None, False, True)


def test_load_project_names_a_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="packfleet.toml: not found"):
        load_project(tmp_path)


def test_load_project_names_a_missing_module_or_sql_file(tmp_path: Path) -> None:
    (tmp_path / "packfleet.toml").write_text(HEAD + '[packages.job]\nkind = "python"\nentry = "a.b:main"\n')
    with pytest.raises(PackageError, match=r"looked for a/b\.py and a/b/__init__\.py"):
        load_project(tmp_path)
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "__init__.py").write_text("def main(ctx): pass\n")
    assert load_project(tmp_path).packages["job"].entry == "a.b:main"

    (tmp_path / "packfleet.toml").write_text(HEAD + DB + sql("s.sql"))
    with pytest.raises(PackageError, match=r"\[packages.s\] key 'file': 's.sql' not found"):
        load_project(tmp_path)


def test_resolve_coerces_command_line_text_and_fills_defaults() -> None:
    project = parse_manifest(
        HEAD
        + '[parameters.url]\ndefault = "sqlite://"\n'
        + PYTHON
        + '[packages.job.parameters.n]\ntype = "int"\n'
        + '[packages.job.parameters.ratio]\ntype = "float"\ndefault = 0.5\n'
        + '[packages.job.parameters.dry]\ntype = "bool"\ndefault = false\n',
        source="t",
    )

    values = resolve_parameters(project, "job", {"n": "42", "dry": "yes", "ratio": "1.5"})

    assert values == {"url": "sqlite://", "n": 42, "ratio": 1.5, "dry": True}
    assert resolve_parameters(project, "job", {"n": 7, "ratio": 2, "dry": False})["ratio"] == 2.0
    assert type(resolve_parameters(project, "job", {"n": 7, "ratio": 2})["ratio"]) is float


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"n": "4x"}, "parameter 'n' of package 'job': expected an integer, got '4x'"),
        ({"n": True}, "expected an integer"),
        ({"n": 1, "flag": "maybe"}, "expected true/false"),
        ({"n": 1, "nn": 2}, "has no parameter 'nn' (did you mean 'n'?)"),
        ({"n": 1, "token": 5}, "parameter 'token' of package 'job': expected a value of type string"),
        ({}, "needs a value for required parameter(s): n"),
    ],
)
def test_resolve_refuses_bad_input(given: dict[str, object], message: str) -> None:
    project = parse_manifest(
        HEAD
        + '[parameters.token]\ndefault = "s"\nsensitive = true\n'
        + PYTHON
        + '[packages.job.parameters.n]\ntype = "int"\n'
        + '[packages.job.parameters.flag]\ntype = "bool"\ndefault = true\n',
        source="t",
    )
    with pytest.raises(PackageError) as caught:
        resolve_parameters(project, "job", given)  # type: ignore[arg-type]
    assert message in caught.value.message


def test_resolve_names_the_closest_package() -> None:
    with pytest.raises(PackageError, match=r"no package 'lod' \(did you mean 'load'\?\)"):
        resolve_parameters(load_project(EXAMPLE), "lod", {})


def test_mask_hides_sensitive_values_only() -> None:
    project = load_project(EXAMPLE)
    values = resolve_parameters(project, "load", {"notify_token": "s3cret"})

    masked = mask_parameters(project, "load", values)

    assert masked["notify_token"] == "********"
    assert masked["target_db"] == "sqlite:///orders.db"
    assert values["notify_token"] == "s3cret"
