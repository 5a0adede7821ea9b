"""The layer map of docs/architecture.md, enforced over the source with :mod:`ast`.

Every ``import`` counts: at module level, inside functions and under ``TYPE_CHECKING`` (a type-only
import still ties two modules together for mypy and for a reader). Each violation names the file,
the line and the rule it breaks.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

import packfleet

SRC = Path(packfleet.__file__).parent.parent

#: Which layers each layer may import (``packfleet.errors`` is open to all). A *layer* is a subpackage
#: (``packfleet.master``) or a top-level module (``packfleet.thumbprint``); ``packfleet`` is the root
#: package itself (its ``__version__``). Keep in step with the diagram in docs/architecture.md.
ALLOWED: dict[str, frozenset[str]] = {
    name: frozenset(layers)
    for name, layers in {
        "errors": set(),
        "packfleet": set(),
        "thumbprint": set(),
        "expiry": set(),
        "_files": set(),
        "_lifetime": set(),
        "_systemd": set(),
        # Leaves: only the error tree, thumbprints and atomic file writes.
        "pki": {"thumbprint", "_files"},
        "config": {"thumbprint", "_files"},
        "secretbox": {"_files"},
        "protocol": set(),
        # The trust rules, each once: the loaders, doctor and the TLS explainer read their findings.
        "trust": {"pki", "config", "expiry", "thumbprint"},
        "transport": {"pki", "protocol", "config", "thumbprint", "trust"},
        # The catalog stores the codes the protocol defines (status codes, sources, states).
        "catalog": {"pki", "thumbprint", "secretbox", "protocol"},
        "packages": {"_lifetime"},
        # master and worker share only protocol (and the layers under both).
        "master": {
            "catalog", "packages", "protocol", "transport", "pki", "config", "thumbprint", "expiry",
            "packfleet", "_systemd", "_files", "secretbox", "console", "trust",
        },
        # The web console: the master hands it a `Fleet`; it imports no master module.
        "console": {
            "catalog", "packages", "transport", "pki", "config", "thumbprint", "expiry", "packfleet",
            "secretbox", "_files", "protocol",
        },
        "worker": {
            "packages", "protocol", "transport", "pki", "config", "thumbprint", "expiry", "packfleet",
            "_systemd", "trust",
        },
        # The manager's loader raises the admin certificate rule's first error (trust).
        "manager": {"transport", "config", "pki", "protocol", "thumbprint", "trust"},
        "provision": {
            "catalog", "pki", "config", "transport", "protocol", "thumbprint", "secretbox", "_files",
        },
        "doctor": {
            "catalog", "config", "expiry", "master", "worker", "pki", "protocol", "transport", "thumbprint",
            "trust",
        },
        "localcluster": {"_lifetime", "pki", "transport", "config"},
        # The bench fills catalogs directly and drives the console over HTTPS; it reads the worker
        # settings' defaults to know when its workers reach their steady state.
        "bench": {
            "localcluster", "manager", "packages", "pki", "protocol", "transport", "packfleet", "catalog",
            "console", "config",
        },
        # cli is on top: it may use every layer below it, none of which imports it back.
        "cli": {
            "provision", "manager", "master", "worker", "packages", "doctor", "localcluster", "catalog",
            "transport", "protocol", "pki", "config", "thumbprint", "expiry", "packfleet", "secretbox",
            "console", "demo", "trust",
        },
        "__main__": {"cli"},
        "demo": {"localcluster"},
        # The sample project shipped as package data: user code that imports no packfleet layer.
        "examples": set(),
    }.items()
}  # fmt: skip

#: Imports that make a network client or server: the catalog is storage and must stay free of them.
TRANSPORTS = ("packfleet.transport", "aiohttp", "ssl")


@dataclass(frozen=True)
class Import:
    file: Path
    line: int
    importer: str  # dotted module name of the importing file
    target: str  # dotted name imported (a module, or a module's attribute)


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(root: Path, path: Path) -> list[Import]:
    """Every import statement of ``path``, anywhere in the file, relative ones resolved."""
    importer = module_name(root, path)
    package = importer.split(".") if path.name == "__init__.py" else importer.split(".")[:-1]
    found: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [Import(path, node.lineno, importer, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            # `from a.b import c` imports module a.b.c when c is one; else the attribute of a.b.
            found += [Import(path, node.lineno, importer, f"{module}.{alias.name}") for alias in node.names]
    return found


def all_imports(root: Path) -> tuple[set[str], list[Import]]:
    modules = {module_name(root, p): p for p in sorted((root / "packfleet").rglob("*.py"))}
    found = [i for p in modules.values() for i in imports_of(root, p)]
    return set(modules), found


def resolve(target: str, modules: set[str]) -> str | None:
    """The packfleet module an import loads: the longest module prefix of the dotted name."""
    parts = target.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in modules:
            return name
    return None


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "packfleet"


def where(root: Path, imp: Import) -> str:
    return f"{imp.file.relative_to(root).as_posix()}:{imp.line}"


def layer_violations(root: Path) -> list[str]:
    modules, found = all_imports(root)
    problems: list[str] = []
    for imp in found:
        top = imp.target.split(".")[0]
        transport = imp.target.startswith("packfleet.transport") or top in TRANSPORTS
        if layer(imp.importer) == "catalog" and transport:
            problems.append(
                f"{where(root, imp)}: the catalog imports no transport, "
                f"but {imp.importer} imports {imp.target}"
            )
        module = resolve(imp.target, modules)
        if module is None:
            continue
        source, dest = layer(imp.importer), layer(module)
        if source == dest:
            continue
        if {source, dest} == {"master", "worker"}:
            problems.append(
                f"{where(root, imp)}: master and worker never import each other (they share only "
                f"packfleet.protocol), but {imp.importer} imports {module}"
            )
            continue
        private = [p for p in module.split(".")[2:] if p.startswith("_") and p != "__init__"]
        if private and dest not in ("_files", "_lifetime", "_systemd"):
            problems.append(
                f"{where(root, imp)}: a layer imports only another layer's facade, but {imp.importer} "
                f"imports the private module {module} (use packfleet.{dest})"
            )
        if source not in ALLOWED:
            problems.append(f"{where(root, imp)}: layer {source!r} is not in the layer map (ALLOWED, docs)")
        elif dest != "errors" and dest not in ALLOWED[source]:
            problems.append(
                f"{where(root, imp)}: dependency direction: {source} may import only "
                f"{', '.join(sorted(ALLOWED[source] | {'errors'}))}; {imp.importer} imports {module}"
            )
    return problems


def import_cycles(root: Path) -> list[str]:
    """Each strongly connected group of modules, named with one import line per edge inside it."""
    modules, found = all_imports(root)
    edges: dict[str, dict[str, Import]] = {m: {} for m in modules}
    for imp in found:
        module = resolve(imp.target, modules)
        if module is None:
            continue
        # Importing a.b.c runs a/__init__ and a/b/__init__ first, except the packages the importer
        # itself lives in: those are already being imported when it runs.
        parts = module.split(".")
        for end in range(1, len(parts) + 1):
            name = ".".join(parts[:end])
            if name in modules and name != imp.importer and not imp.importer.startswith(name + "."):
                edges[imp.importer].setdefault(name, imp)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan; the graph has ~150 nodes, recursion is fine
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group: list[str] = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    problems = []
    for group in groups:
        lines = [
            f"{where(root, imp)}: {a} imports {b}"
            for a in group
            for b, imp in sorted(edges[a].items())
            if b in group
        ]
        problems.append("import cycle among " + ", ".join(group) + ":\n    " + "\n    ".join(lines))
    return problems


def test_the_layers_follow_the_architecture() -> None:
    problems = layer_violations(SRC)
    assert not problems, "\n".join(problems)


def test_there_is_no_import_cycle() -> None:
    problems = import_cycles(SRC)
    assert not problems, "\n".join(problems)


def test_every_layer_is_in_the_map() -> None:
    modules, _ = all_imports(SRC)
    assert {layer(m) for m in modules} <= set(ALLOWED)


def test_the_cli_is_complete_at_import() -> None:
    # A fresh interpreter: the test session may already have imported every command module.
    code = textwrap.dedent(
        """
        import importlib, pkgutil
        import click
        import packfleet.cli as cli_package

        def names(group, prefix=()):
            out = []
            for name, command in sorted(group.commands.items()):
                out.append(" ".join((*prefix, name)))
                if isinstance(command, click.Group):
                    out += names(command, (*prefix, name))
            return out

        before = names(cli_package.cli)
        for info in pkgutil.iter_modules(cli_package.__path__):
            importlib.import_module("packfleet.cli." + info.name)
        after = names(cli_package.cli)
        print(len(before))
        print("\\n".join(sorted(set(after) - set(before))))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    count, *late = out.stdout.strip().split("\n")
    assert int(count) > 40, out.stdout
    assert [line for line in late if line] == [], "commands registered only after import: " + ", ".join(late)


# The checks themselves, on a small made-up tree: each rule must catch what it is about.


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    write(
        tmp_path,
        {
            "packfleet/__init__.py": "",
            "packfleet/errors.py": "",
            "packfleet/pki/__init__.py": "from packfleet.pki._store import CertStore\n",
            "packfleet/pki/_store.py": "CertStore = 1\n",
            "packfleet/protocol/__init__.py": "",
            "packfleet/catalog/__init__.py": "from packfleet.pki import CertStore\n",
            "packfleet/master/__init__.py": "from packfleet.protocol import *\n",
            "packfleet/worker/__init__.py": "",
        },
    )
    return tmp_path


def test_a_clean_tree_passes(tree: Path) -> None:
    assert layer_violations(tree) == []
    assert import_cycles(tree) == []


def test_a_private_module_of_another_layer_is_named(tree: Path) -> None:
    write(tree, {"packfleet/catalog/_x.py": "import os\n\nfrom packfleet.pki._store import CertStore\n"})
    (problem,) = layer_violations(tree)
    assert problem.startswith("packfleet/catalog/_x.py:3: a layer imports only another layer's facade")
    assert "packfleet.pki._store" in problem


def test_master_and_worker_importing_each_other_is_named(tree: Path) -> None:
    write(tree, {"packfleet/worker/_agent.py": "def f():\n    from packfleet.master import x\n"})
    (problem,) = layer_violations(tree)
    assert problem.startswith("packfleet/worker/_agent.py:2: master and worker never import each other")


def test_a_catalog_importing_a_transport_is_named(tree: Path) -> None:
    write(tree, {"packfleet/catalog/_net.py": "import aiohttp\n"})
    (problem,) = layer_violations(tree)
    assert problem == (
        "packfleet/catalog/_net.py:1: the catalog imports no transport, "
        "but packfleet.catalog._net imports aiohttp"
    )


def test_an_import_against_the_direction_is_named(tree: Path) -> None:
    type_only = "TYPE_CHECKING = False\nif TYPE_CHECKING:\n    from packfleet import catalog\n"
    write(tree, {"packfleet/pki/_uses_catalog.py": type_only})
    (problem,) = layer_violations(tree)
    assert problem.startswith("packfleet/pki/_uses_catalog.py:3: dependency direction: pki may import only")
    assert problem.endswith("imports packfleet.catalog")


def test_a_cycle_is_named_with_its_lines(tree: Path) -> None:
    write(
        tree,
        {
            "packfleet/master/_a.py": "from packfleet.master import _b\n",
            "packfleet/master/_b.py": "\n\nfrom ._a import thing\n",
        },
    )
    (problem,) = import_cycles(tree)
    assert problem.startswith("import cycle among packfleet.master._a, packfleet.master._b:")
    assert "packfleet/master/_a.py:1: packfleet.master._a imports packfleet.master._b" in problem
    assert "packfleet/master/_b.py:3: packfleet.master._b imports packfleet.master._a" in problem


def test_every_test_module_gets_the_tests_mypy_profile() -> None:
    # `mypy tests` names tests/master/x.py "master.x" (pytest puts tests/ on sys.path): a new test
    # folder or top-level module must join the relaxed profile's list in pyproject.toml.
    import tomllib

    config = tomllib.loads((SRC.parent / "pyproject.toml").read_text())
    overrides = config["tool"]["mypy"]["overrides"]
    listed = {m for o in overrides if o.get("disallow_untyped_defs") is False for m in o["module"]}
    tests = SRC.parent / "tests"
    wanted = {p.stem for p in tests.glob("*.py")} | {
        f"{p.name}.*" for p in tests.iterdir() if (p / "__init__.py").exists()
    }
    assert wanted <= listed, (
        f"add to [[tool.mypy.overrides]] for tests in pyproject.toml: {sorted(wanted - listed)}"
    )
