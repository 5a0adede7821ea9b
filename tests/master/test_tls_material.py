"""Start-up and reload: binding and SSLCertThumbprint must agree; trust and certificate swap live."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from master.support import (
    PORT_NUMBER,
    MasterHome,
    client_for,
    context_for,
    heartbeat_body,
    new_agent_id,
    public,
    raw,
)
from packfleet.config import (
    Binding,
    add_binding,
    delete_binding,
    format_ipport,
    load_master_settings,
    new_appid,
    save_master_settings,
)
from packfleet.errors import CertificateNotFound, PkiError, SettingsError, TransportError
from packfleet.manager import ManagerClient
from packfleet.master import MasterServer, load_tls_material
from packfleet.pki import CertStore, Credential, create_self_signed
from packfleet.protocol import routes
from packfleet.transport import MasterClient, fetch_server_certificate, master_server_context

Connect = Callable[[Credential | None], MasterClient]
IPPORT = format_ipport("0.0.0.0", PORT_NUMBER)


def rebind(mh: MasterHome, thumbprint: str, store: str = "Root") -> None:
    delete_binding(mh.home, IPPORT)
    add_binding(mh.home, Binding(IPPORT, thumbprint, store, new_appid()))


async def test_a_binding_that_disagrees_with_the_setting_refuses_to_start(mh: MasterHome) -> None:
    other = create_self_signed(["127.0.0.1"])
    CertStore(mh.home, "Root").add(other)
    rebind(mh, other.thumbprint)
    with pytest.raises(SettingsError) as caught:
        await MasterServer(mh.home, host="127.0.0.1", port=0).start()
    text = str(caught.value)
    assert other.thumbprint in text and mh.master.thumbprint in text
    assert f"packfleet settings set master SSLCertThumbprint {other.thumbprint}" in text
    assert "packfleet binding delete" in text


async def test_no_binding_says_how_to_add_one(mh: MasterHome) -> None:
    delete_binding(mh.home, IPPORT)
    with pytest.raises(SettingsError) as caught:
        await MasterServer(mh.home, host="127.0.0.1", port=0).start()
    assert caught.value.fix == (
        f"packfleet binding add --port {PORT_NUMBER} --certhash {mh.master.thumbprint} --store Root"
    )


async def test_a_bound_certificate_without_its_key_refuses_to_start(mh: MasterHome) -> None:
    CertStore(mh.home, "Root").key_path(mh.master.thumbprint).unlink()
    with pytest.raises(SettingsError, match="no private key"):
        await MasterServer(mh.home, host="127.0.0.1", port=0).start()


async def test_a_binding_naming_a_missing_certificate_refuses_to_start(mh: MasterHome) -> None:
    CertStore(mh.home, "Root").delete(mh.master.thumbprint)
    with pytest.raises(CertificateNotFound, match=mh.master.thumbprint):
        await MasterServer(mh.home, host="127.0.0.1", port=0).start()


async def test_a_new_worker_certificate_connects_after_reload_without_restart(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect
) -> None:
    newcomer = create_self_signed(["worker2"])
    body = heartbeat_body(new_agent_id(), "worker2")
    with pytest.raises(TransportError):
        await connect(newcomer).request("POST", routes.WORKER_HEARTBEAT, json_body=body)
    port = server.port
    CertStore(mh.home, "Root").add(public(newcomer))  # `packfleet cert import worker.cer --store Root`
    await server.reload()
    reply = await connect(newcomer).request("POST", routes.WORKER_HEARTBEAT, json_body=body)
    assert reply["state"] == "disabled"
    assert server.port == port
    assert len(await manager.list_workers()) == 1  # the admin's keep-alive connection still works


async def test_a_certificate_added_to_root_is_trusted_without_building_a_context(
    mh: MasterHome, server: MasterServer, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[str] = []
    build = master_server_context

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        built.append("context")
        return build(*args, **kwargs)

    monkeypatch.setattr("packfleet.master._tls.master_server_context", counted)
    newcomer = create_self_signed(["worker2"])
    body = heartbeat_body(new_agent_id(), "worker2")
    CertStore(mh.home, "Root").add(public(newcomer))
    await server.reload()
    reply = await connect(newcomer).request("POST", routes.WORKER_HEARTBEAT, json_body=body)
    assert reply["state"] == "disabled"
    assert built == []  # the serving context trusts it too: no reload of the whole Root store
    # Forgetting one needs a new context: the newcomer is refused from its next handshake on.
    CertStore(mh.home, "Root").delete(newcomer.thumbprint)
    await server.reload()
    assert built == ["context"]
    with pytest.raises(TransportError):
        await connect(newcomer).request("POST", routes.WORKER_HEARTBEAT, json_body=body)
    beat = heartbeat_body(new_agent_id())
    assert (await connect(mh.worker).request("POST", routes.WORKER_HEARTBEAT, json_body=beat))["state"]


async def test_an_unreadable_certificate_added_to_root_adds_none_of_its_batch(
    mh: MasterHome, server: MasterServer, connect: Connect
) -> None:
    newcomer = create_self_signed(["worker2"])
    root = CertStore(mh.home, "Root")
    root.add(public(newcomer))
    # Named to sort after the newcomer: OpenSSL would have loaded the newcomer before refusing it.
    root.cert_path("F" * 40).write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(PkiError, match="cannot load the master's Root store"):
        await server.reload()
    with pytest.raises(TransportError):
        body = heartbeat_body(new_agent_id(), "worker2")
        await connect(newcomer).request("POST", routes.WORKER_HEARTBEAT, json_body=body)
    beat = heartbeat_body(new_agent_id())
    assert (await connect(mh.worker).request("POST", routes.WORKER_HEARTBEAT, json_body=beat))["state"]


def test_only_trust_added_keeps_the_serving_context(mh: MasterHome) -> None:
    before = load_tls_material(mh.home)
    assert before.trust_added_to(before) == ""
    newcomer = create_self_signed(["worker2"])
    CertStore(mh.home, "Root").add(public(newcomer))
    grown = load_tls_material(mh.home)
    assert grown.trust_added_to(before) == newcomer.cert_pem().decode()
    assert before.trust_added_to(grown) is None  # a certificate no longer trusted
    edited = dict(grown.trusted)
    edited[newcomer.thumbprint] = create_self_signed(["other"]).cert_pem().decode()
    assert dataclasses.replace(grown, trusted=edited).trust_added_to(grown) is None
    tls13 = before.settings
    tls12 = dataclasses.replace(grown, settings=dataclasses.replace(tls13, tls_minimum_version="1.2"))
    assert tls12.trust_added_to(before) is None
    other = create_self_signed(["127.0.0.1"])
    moved = dataclasses.replace(grown, binding=dataclasses.replace(grown.binding, certhash=other.thumbprint))
    assert moved.trust_added_to(before) is None


async def test_adding_a_worker_through_the_manager_installs_it_in_root_and_reloads(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect
) -> None:
    newcomer = create_self_signed(["worker2"])
    record = await manager.add_worker(newcomer.cert_pem().decode(), display_name="w2", enable=True)
    assert record["thumbprint"] == newcomer.thumbprint and record["enable_on_bind"] is True
    assert CertStore(mh.home, "Root").contains(newcomer.thumbprint)
    assert not CertStore(mh.home, "Root").key_path(newcomer.thumbprint).exists()
    agent = new_agent_id()
    reply = await connect(newcomer).request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent))
    assert reply["state"] == "enabled"
    actions = [entry["action"] for entry in await manager.audit()]
    assert "certificate.add" in actions


async def test_deleting_a_worker_removes_its_certificate_from_root(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect
) -> None:
    agent = new_agent_id()
    await connect(mh.worker).request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent))
    deleted = await manager.delete_worker(agent)
    assert deleted["removed_from_root"] == [mh.worker.thumbprint]
    assert not CertStore(mh.home, "Root").contains(mh.worker.thumbprint)
    with pytest.raises(TransportError):
        await connect(mh.worker).request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent))


async def test_reload_swaps_the_served_certificate_when_binding_and_setting_change(
    mh: MasterHome, server: MasterServer, tmp_path: Path
) -> None:
    assert (await asyncio.to_thread(fetch_server_certificate, "127.0.0.1", server.port)).thumbprint == (
        mh.master.thumbprint
    )
    successor = create_self_signed(["127.0.0.1"])
    CertStore(mh.home, "Root").add(successor)
    rebind(mh, successor.thumbprint)
    settings = load_master_settings(mh.home)
    save_master_settings(mh.home, dataclasses.replace(settings, ssl_cert_thumbprint=successor.thumbprint))
    await server.reload()
    served = await asyncio.to_thread(fetch_server_certificate, "127.0.0.1", server.port)
    assert served.thumbprint == successor.thumbprint == server.serving_thumbprint


async def test_a_reload_with_a_mismatch_keeps_the_last_good_certificate(
    mh: MasterHome, server: MasterServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = create_self_signed(["127.0.0.1"])
    CertStore(mh.home, "Root").add(other)
    rebind(mh, other.thumbprint)  # the setting still names the old certificate
    with caplog.at_level(logging.ERROR, "packfleet.master"), pytest.raises(SettingsError):
        await server.reload()
    assert any(
        "reload refused" in r.getMessage() and mh.master.thumbprint in r.getMessage() for r in caplog.records
    )
    served = await asyncio.to_thread(fetch_server_certificate, "127.0.0.1", server.port)
    assert served.thumbprint == mh.master.thumbprint
    anonymous = context_for(None, mh, tmp_path)
    assert (await raw(anonymous, server, "GET", routes.HEALTH)).status == 200


async def test_the_file_watcher_reloads_after_a_root_store_edit(mh: MasterHome, connect: Connect) -> None:
    # A separate server with the watcher on (the fixture's is off).
    async with MasterServer(mh.home, host="127.0.0.1", port=0, watch_interval=0.05) as watched:
        newcomer = create_self_signed(["worker3"])
        CertStore(mh.home, "Root").add(public(newcomer))
        async with client_for(newcomer, mh, watched, mh.home.parent / "c") as client:
            for _ in range(100):  # bounded: the watcher ticks every 50 ms
                try:
                    reply = await client.request(
                        "POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(new_agent_id())
                    )
                    break
                except TransportError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("the watcher never reloaded the Root store")
        assert reply["state"] == "disabled"
