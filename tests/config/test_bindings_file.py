"""bindings.json: HTTP.SYS's sslcert table as a file, with netsh's rules."""

from __future__ import annotations

import json
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from packfleet.config import (
    BINDINGS_FILE,
    Binding,
    add_binding,
    delete_binding,
    format_ipport,
    get_binding,
    load_bindings,
    new_appid,
    normalize_ipport,
)
from packfleet.errors import SettingsError

THUMB = "A94B0C12EF" + "00" * 15
APPID = "{4dc3e181-e14b-4a21-b022-59fc669b0914}"


def binding(
    ipport: str = "0.0.0.0:8391", certhash: str = THUMB, store: str = "Root", appid: str = APPID
) -> Binding:
    return Binding(ipport=ipport, certhash=certhash, certstorename=store, appid=appid)


def write_file(home: Path, content: object) -> Path:
    path = home / BINDINGS_FILE
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_no_file_means_no_bindings(tmp_path: Path) -> None:
    assert load_bindings(tmp_path) == []
    assert get_binding(tmp_path, "0.0.0.0:8391") is None


def test_add_show_delete(tmp_path: Path) -> None:
    added = add_binding(tmp_path, binding())
    assert added == binding()
    assert added.port == 8391
    assert get_binding(tmp_path, "0.0.0.0:8391") == added
    assert load_bindings(tmp_path) == [added]
    assert delete_binding(tmp_path, "0.0.0.0:8391") == added
    assert load_bindings(tmp_path) == []
    assert json.loads((tmp_path / BINDINGS_FILE).read_text()) == []


def test_file_holds_netsh_fields(tmp_path: Path) -> None:
    add_binding(tmp_path, binding())
    path = tmp_path / BINDINGS_FILE
    assert json.loads(path.read_text()) == [
        {"ipport": "0.0.0.0:8391", "certhash": THUMB, "certstorename": "Root", "appid": APPID}
    ]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # private, as every node file


def test_add_normalises_what_people_type(tmp_path: Path) -> None:
    added = add_binding(
        tmp_path,
        binding(
            ipport=" 127.0.0.1:9443",
            certhash="\u200ea9 4b 0c 12 ef" + " 00" * 15,
            store="root",
            appid="4DC3E181-E14B-4A21-B022-59FC669B0914",
        ),
    )
    assert added == binding(ipport="127.0.0.1:9443")
    assert load_bindings(tmp_path) == [added]


def test_add_creates_the_home(tmp_path: Path) -> None:
    add_binding(tmp_path / "m", binding())
    assert (tmp_path / "m" / BINDINGS_FILE).is_file()


def test_several_ipports_are_kept_in_order(tmp_path: Path) -> None:
    first = add_binding(tmp_path, binding())
    second = add_binding(tmp_path, binding(ipport="[::]:8391", store="My", appid=new_appid()))
    assert load_bindings(tmp_path) == [first, second]
    delete_binding(tmp_path, "0.0.0.0:8391")
    assert load_bindings(tmp_path) == [second]


def test_bound_ipport_is_refused_like_netsh(tmp_path: Path) -> None:
    add_binding(tmp_path, binding())
    with pytest.raises(SettingsError) as caught:
        add_binding(tmp_path, binding(certhash="B" * 40))
    assert caught.value.message == (
        f"0.0.0.0:8391 is already bound to certificate {THUMB} (Root store, appid {APPID}); delete it first"
    )
    assert caught.value.fix == "packfleet binding delete --ip 0.0.0.0 --port 8391"
    assert get_binding(tmp_path, "0.0.0.0:8391") == binding()


def test_delete_without_binding_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="no binding for 0.0.0.0:8391") as caught:
        delete_binding(tmp_path, "0.0.0.0:8391")
    assert (
        caught.value.fix is not None and "packfleet binding add --ip 0.0.0.0 --port 8391" in caught.value.fix
    )


def test_lookup_matches_other_spellings_of_the_same_ipport(tmp_path: Path) -> None:
    add_binding(tmp_path, binding(ipport="[::]:8391"))
    assert get_binding(tmp_path, "[0:0::0]:8391") is not None
    assert get_binding(tmp_path, "0.0.0.0:8391") is None


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("0.0.0.0:8391", "0.0.0.0:8391"),
        ("127.0.0.1:1", "127.0.0.1:1"),
        ("[::1]:8391", "[::1]:8391"),
        ("[0:0:0:0:0:0:0:0]:65535", "[::]:65535"),
        ("[FE80::1]:443", "[fe80::1]:443"),
    ],
)
def test_valid_ipports(text: str, canonical: str) -> None:
    assert normalize_ipport(text) == canonical


@pytest.mark.parametrize(
    "text",
    [
        "8391",
        "0.0.0.0",
        "0.0.0.0:",
        "0.0.0.0:0",
        "0.0.0.0:65536",
        "300.1.1.1:80",
        "[1.2.3.4]:80",
        "::1:80",
        "host:80",
    ],
)
def test_invalid_ipports(text: str) -> None:
    with pytest.raises(SettingsError, match="is not an ipport"):
        normalize_ipport(text)


def test_format_ipport_brackets_ipv6() -> None:
    assert format_ipport("0.0.0.0", 8391) == "0.0.0.0:8391"
    assert format_ipport("::", 8391) == "[::]:8391"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("appid", "packfleet", "is not an appid: expected a GUID"),
        ("store", "CA", "is not a certificate store name: expected My or Root"),
        ("certhash", "A94B", "is not a valid certhash"),
        ("ipport", "*:8391", "is not an ipport"),
    ],
)
def test_add_refuses_bad_fields(tmp_path: Path, field: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        add_binding(tmp_path, binding(**{field: value}))
    assert not (tmp_path / BINDINGS_FILE).exists()


def test_new_appid_is_a_braced_guid() -> None:
    appid = new_appid()
    assert appid.startswith("{") and appid.endswith("}")
    assert appid != new_appid()
    assert binding(appid=appid.strip("{}")) != binding(appid=appid)  # normalised only by add_binding


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"ipport": "0.0.0.0:8391"}, "expected a JSON array of bindings, found an object"),
        ([["0.0.0.0:8391"]], "entry 1 is not a JSON object"),
        ([{"ipport": "0.0.0.0:8391", "certHash": THUMB}], "unknown key 'certHash'; did you mean 'certhash'"),
        ([{"ipport": "0.0.0.0:8391", "certhash": THUMB}], "entry 1 lacks certstorename, appid"),
        (
            [{"ipport": "0.0.0.0:8391", "certhash": THUMB, "certstorename": "Root", "appid": 7}],
            "every value must be a string",
        ),
        (
            [{"ipport": "0.0.0.0:8391", "certhash": THUMB, "certstorename": "Root", "appid": "x"}],
            "entry 1: 'x' is not an appid",
        ),
        (
            [binding().to_dict(), binding(certhash="B" * 40).to_dict()],
            "0.0.0.0:8391 is bound twice",
        ),
    ],
)
def test_bad_files_are_refused_with_the_reason(tmp_path: Path, content: object, message: str) -> None:
    path = write_file(tmp_path, content)
    with pytest.raises(SettingsError, match=message) as caught:
        load_bindings(tmp_path)
    assert caught.value.message.startswith(str(path))


def test_malformed_json_points_at_line_and_column(tmp_path: Path) -> None:
    write_file(tmp_path, '[\n  {"ipport": "0.0.0.0:8391",}\n]')
    with pytest.raises(SettingsError, match="not valid JSON at line 2, column 29"):
        load_bindings(tmp_path)


def test_a_broken_file_is_not_overwritten_by_add(tmp_path: Path) -> None:
    path = write_file(tmp_path, "[oops")
    with pytest.raises(SettingsError):
        add_binding(tmp_path, binding())
    assert path.read_text() == "[oops"


def test_concurrent_adds_lose_no_binding(tmp_path: Path) -> None:
    ports = range(8391, 8391 + 16)
    barrier = threading.Barrier(len(ports))

    def add(port: int) -> None:
        barrier.wait(timeout=10)
        add_binding(tmp_path, binding(ipport=f"127.0.0.1:{port}"))

    with ThreadPoolExecutor(max_workers=len(ports)) as pool:
        list(pool.map(add, ports))
    assert sorted(b.port for b in load_bindings(tmp_path)) == list(ports)
