"""successor_of: the replacement certificate of a rotation keeps names, key type and lifetime."""

from __future__ import annotations

from packfleet.pki import create_self_signed, successor_of


def test_a_successor_keeps_names_key_type_and_lifetime_with_a_new_key() -> None:
    current = create_self_signed(["master1", "10.0.0.7"], key_type="rsa-2048", days=30)
    new = successor_of(current)
    info = new.info()
    assert info.subject_cns == ["master1", "10.0.0.7"]
    assert (info.san_dns, info.san_ip) == (["master1"], ["10.0.0.7"])
    assert info.key_type == "rsa-2048" and info.lifetime_days == 30
    assert new.thumbprint != current.thumbprint and new.private_key is not None
    assert new.cert_pem() != current.cert_pem()


def test_names_and_days_given_replace_the_current_ones() -> None:
    current = create_self_signed(["master1"], days=30)
    info = successor_of(current.info(), names=["master2"], days=7).info()
    assert info.subject_cns == ["master2"] and info.lifetime_days == 7
    assert info.key_type == "ecdsa-p256"
