"""Start-up checks of the worker's identity and pins, and TLS failures explained."""

from __future__ import annotations

from pathlib import Path

import pytest

from packfleet.config import load_worker_settings
from packfleet.errors import CertificateNotFound, PkiError, SettingsError, TlsError
from packfleet.pki import CertStore, Credential, create_self_signed
from packfleet.transport import HotSwapServerContext
from packfleet.worker import WorkerAgent, host_matches, load_identity

from .conftest import MakeAgent, Pki, server_context, write_home
from .stubmaster import StubMaster, serve


def test_identity_reads_the_worker_cert_and_the_pinned_master(tmp_path: Path, pki: Pki) -> None:
    home = write_home(tmp_path, pki, "https://localhost:8391")
    identity = load_identity(home)
    assert identity.pins == [pki.master.thumbprint]
    assert identity.certificate.thumbprint == pki.worker.thumbprint
    assert identity.key_file.is_file()
    assert identity.master_pem == pki.master.cert_pem().decode()


def test_endpoint_host_must_be_a_name_of_the_master_certificate(tmp_path: Path, pki: Pki) -> None:
    home = write_home(tmp_path, pki, "https://master.example:8391")
    with pytest.raises(SettingsError) as raised:
        load_identity(home)
    message = str(raised.value)
    assert "'master.example'" in message
    assert f"master certificate {pki.master.thumbprint} (127.0.0.1, localhost)" in message
    assert "MasterEndpoint" in message


@pytest.mark.parametrize(
    ("host", "expected"),
    [("LOCALHOST", True), ("localhost.", True), ("127.0.0.1", True), ("127.0.0.2", False), ("[::1]", False)],
)
def test_host_matching_compares_names_without_case_and_ips_as_addresses(
    pki: Pki, host: str, expected: bool
) -> None:
    assert host_matches(host, pki.master.info()) is expected


def test_a_pinned_master_certificate_missing_from_root_is_named(tmp_path: Path, pki: Pki) -> None:
    home = write_home(tmp_path, pki, "https://127.0.0.1:8391")
    CertStore(home, "Root").delete(pki.master.thumbprint)
    with pytest.raises(PkiError) as raised:
        load_identity(home)
    assert f"pinned master certificate {pki.master.thumbprint} (MasterHttpsCertThumbprint)" in str(
        raised.value
    )
    assert "is not in this worker's Root store" in str(raised.value)
    assert raised.value.fix == "packfleet cert import master.cer --store Root"


def test_the_next_master_pin_must_be_in_root_too(tmp_path: Path, pki: Pki) -> None:
    missing = create_self_signed(["127.0.0.1"])
    home = write_home(
        tmp_path, pki, "https://127.0.0.1:8391", next_master_https_cert_thumbprint=missing.thumbprint
    )
    with pytest.raises(PkiError, match=f"{missing.thumbprint} \\(NextMasterHttpsCertThumbprint\\)"):
        load_identity(home)


def test_a_worker_certificate_without_its_key_is_refused(tmp_path: Path, pki: Pki) -> None:
    home = write_home(tmp_path, pki, "https://127.0.0.1:8391")
    CertStore(home, "My").key_path(pki.worker.thumbprint).unlink()
    with pytest.raises(PkiError, match="has no private key"):
        load_identity(home)
    CertStore(home, "My").delete(pki.worker.thumbprint)
    with pytest.raises(CertificateNotFound):
        load_identity(home)


def test_settings_without_a_master_say_how_to_set_one(tmp_path: Path, pki: Pki) -> None:
    home = write_home(tmp_path, pki, "")
    with pytest.raises(SettingsError, match="no MasterEndpoint") as raised:
        load_identity(home)
    assert raised.value.fix == "packfleet settings set worker MasterEndpoint https://MASTER:8391"


async def test_a_master_serving_another_certificate_fails_with_an_explanation(
    tmp_path: Path, pki: Pki, make_agent: MakeAgent
) -> None:
    impostor = create_self_signed(["127.0.0.1"])
    async with serve(StubMaster(), server_context(pki, impostor)) as stub:
        home = write_home(tmp_path, pki, stub.endpoint)
        agent = await make_agent(home)
        with pytest.raises(TlsError) as raised:
            await agent.run(burst=True)
    message = str(raised.value)
    assert f"presented certificate {impostor.thumbprint}" in message
    assert f"pins MasterHttpsCertThumbprint {pki.master.thumbprint}" in message
    assert "packfleet cert import master.cer --store Root" in message
    assert stub.heartbeats == []


async def test_the_next_master_certificate_from_a_heartbeat_is_trusted(
    tmp_path: Path, pki: Pki, make_agent: MakeAgent
) -> None:
    successor = create_self_signed(["127.0.0.1"])
    swap = HotSwapServerContext(server_context(pki))
    stub = StubMaster(next_master_cert_pem=successor.cert_pem().decode())
    async with serve(stub, swap.base):
        home = write_home(tmp_path, pki, stub.endpoint)
        agent = await make_agent(home)
        await agent.heartbeat()

        assert CertStore(home, "Root").contains(successor.thumbprint)
        assert not CertStore(home, "Root").info(successor.thumbprint).has_private_key
        assert load_worker_settings(home).next_master_https_cert_thumbprint == successor.thumbprint
        assert agent.identity.pins == [pki.master.thumbprint, successor.thumbprint]
        # The master switches to its new certificate: the worker's next handshake accepts it.
        swap.swap(lambda: server_context(pki, successor))
        stub.close_after_heartbeat = True
        await agent.heartbeat()  # over the connection opened before the switch, closed after it
        await agent.heartbeat()  # a new handshake, with the new certificate
    assert len(stub.heartbeats) == 3
    assert len(stub.connections) == 2


async def test_a_next_master_certificate_keeps_the_connection_and_is_reported_at_once(
    tmp_path: Path, pki: Pki, make_agent: MakeAgent
) -> None:
    successor = create_self_signed(["127.0.0.1"])
    stub = StubMaster(next_master_cert_pem=successor.cert_pem().decode())
    async with serve(stub, server_context(pki)):
        home = write_home(tmp_path, pki, stub.endpoint)
        agent = await make_agent(home)
        wake = agent.events.wake_heartbeat
        wake.clear()
        await agent.heartbeat()
        assert wake.is_set()  # the step is done here: the heartbeat loop says so at once
        wake.clear()
        await agent.heartbeat()
        assert not wake.is_set()  # nothing new: no heartbeat after heartbeat
    assert stub.heartbeats[-1].accepted_master_thumbprints == [pki.master.thumbprint, successor.thumbprint]
    # Trusting one more certificate cost the master no handshake: both went over one connection.
    assert len(stub.connections) == 1


async def test_reload_keeps_the_last_good_settings_when_the_new_ones_are_bad(
    home: Path, stub: StubMaster, pki: Pki, make_agent: MakeAgent, caplog: pytest.LogCaptureFixture
) -> None:
    agent = await make_agent(home)
    (home / "WorkerSettings.config").write_text('{"MasterEndpont": "https://127.0.0.1:1"}')
    assert agent.reload() is False
    assert "reload refused" in caplog.text and "did you mean 'MasterEndpoint'" in caplog.text
    await agent.heartbeat()  # still talking to the same master with the same certificates

    write_home(home, pki, stub.endpoint, display_name="renamed", max_task_count=7)
    assert agent.reload() is True
    await agent.heartbeat()
    assert (stub.heartbeats[-1].display_name, stub.heartbeats[-1].max_tasks) == ("renamed", 7)


def test_constructing_an_agent_checks_the_identity_first(tmp_path: Path, pki: Pki) -> None:
    home = write_home(tmp_path, pki, "https://10.1.2.3:8391")
    CertStore(home, "Root").add(Credential(pki.master.certificate))
    with pytest.raises(SettingsError, match="'10.1.2.3' is not among the names"):
        WorkerAgent(home)
