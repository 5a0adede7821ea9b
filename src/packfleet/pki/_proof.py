"""Proof of possession: a signature that only the holder of a certificate's private key can make.

When a worker registers its next certificate over a connection authenticated by its current one,
the master must know the worker really holds the new key (RFC 4210 §5.2.8 calls this proof of
possession), or a worker could bind to itself a certificate it merely copied from another node.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from packfleet.errors import UnsupportedKey
from packfleet.pki._credential import PrivateKey


def sign_proof(key: PrivateKey, message: bytes) -> bytes:
    """Sign ``message`` with ``key``: ECDSA with SHA-256, or RSA PKCS#1 v1.5 with SHA-256."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(message, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    raise UnsupportedKey(
        f"cannot sign with a {type(key).__name__}; packfleet certificates use ECDSA or RSA keys",
        fix="packfleet cert create --key ecdsa-p256 ...",
    )


def verify_proof(certificate: x509.Certificate, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` over ``message`` was made by the key of ``certificate``."""
    key = certificate.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        else:
            return False
    except InvalidSignature:
        return False
    return True
