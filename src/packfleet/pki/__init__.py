"""Certificates, keys and stores: what MakeCert, certmgr and winhttpcertcfg do on Windows.

packfleet pins each peer's certificate instead of trusting a CA (as SSIS Scale Out does), so this
layer makes self-signed certificates that OpenSSL 3 and rustls accept as trust anchors, reads the
ones people bring (PEM, DER, PFX), refuses in plain words those a handshake would reject, and keeps
them in the ``My`` and ``Root`` stores of a node's home::

    cred = create_self_signed(parse_names("CN=worker1;CN=10.0.0.7"))
    CertStore(home, "My").add(cred)            # MakeCert -r -ss My
    CertStore(master_home, "Root").add(load_credential(Path("worker.cer")))
"""

from packfleet.pki._checks import check_usable
from packfleet.pki._create import KEY_TYPES, create_self_signed, successor_of
from packfleet.pki._credential import CertInfo, Credential, PrivateKey, sha256_of, thumbprint_of
from packfleet.pki._hosts import is_ip_address
from packfleet.pki._io import export_certificate, export_pfx, load_credential, load_credential_bytes
from packfleet.pki._names import classify_name, local_ips, machine_names, parse_names
from packfleet.pki._proof import sign_proof, verify_proof
from packfleet.pki._store import STORE_NAMES, CertStore

__all__ = [
    "classify_name",
    "KEY_TYPES",
    "STORE_NAMES",
    "CertInfo",
    "CertStore",
    "Credential",
    "PrivateKey",
    "check_usable",
    "create_self_signed",
    "export_certificate",
    "export_pfx",
    "is_ip_address",
    "load_credential",
    "load_credential_bytes",
    "local_ips",
    "machine_names",
    "parse_names",
    "sha256_of",
    "sign_proof",
    "successor_of",
    "thumbprint_of",
    "verify_proof",
]
