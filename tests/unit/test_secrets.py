"""Encrypted credentials: round trips, and every way a credential can fail to open says why."""

from __future__ import annotations

import base64
import doctest
import hashlib
from pathlib import Path

import pytest

from maestro.adapters import secrets as secrets_module
from maestro.adapters.secrets import SecretBox, check_secret, generate_secret, key_id_of, redact, rotate
from maestro.errors import ConfigurationError, SecretUnavailable

SECRET_A = b"a" * 16 + b"0123456789abcdef-first-secret"
SECRET_B = b"b" * 16 + b"0123456789abcdef-other-secret"
FIELD = "config-slack/webhook_url"


@pytest.fixture
def box() -> SecretBox:
    return SecretBox.from_secret(SECRET_A)


def test_round_trip(box: SecretBox) -> None:
    for plaintext in ["hunter2", "", "ünïcødé ✓", '{"private_key": "-----BEGIN PRIVATE KEY-----\\n..."}' * 50]:
        token = box.encrypt(plaintext, context=FIELD)
        assert token.isascii() and (plaintext not in token or plaintext == "")
        assert box.decrypt(token, context=FIELD) == plaintext
        assert box.can_decrypt(token, context=FIELD)


def test_token_format_carries_version_and_key_id(box: SecretBox) -> None:
    token = box.encrypt("x", context=FIELD)
    version, kid, body = token.split(".")
    assert version == "v1" and kid == box.key_id == key_id_of(token)
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    assert len(raw) == 12 + 1 + 16  # nonce, one byte of ciphertext, GCM tag


def test_key_id_is_stable_and_not_a_fingerprint_of_the_secret(box: SecretBox) -> None:
    assert SecretBox.from_secret(SECRET_A).key_id == box.key_id
    assert SecretBox.from_secret(SECRET_B).key_id != box.key_id
    for digest in (hashlib.sha256, hashlib.sha1, hashlib.md5):
        assert box.key_id not in digest(SECRET_A).hexdigest()
    assert "SECRET" not in repr(box) and SECRET_A.decode() not in repr(box)


def test_context_binds_the_ciphertext_to_its_field(box: SecretBox) -> None:
    token = box.encrypt("hunter2", context=FIELD)
    with pytest.raises(SecretUnavailable, match="fails authentication.*copied from another field") as info:
        box.decrypt(token, context="config-git/token")
    assert info.value.details["context"] == "config-git/token"
    assert not box.can_decrypt(token, context="config-git/token")


def test_wrong_secret_is_named_not_garbage(box: SecretBox) -> None:
    token = box.encrypt("hunter2", context=FIELD)
    other = SecretBox.from_secret(SECRET_B)
    with pytest.raises(SecretUnavailable) as info:
        other.decrypt(token, context=FIELD)
    message = info.value.message
    assert "secret file does not match" in message
    assert box.key_id in message and other.key_id in message and FIELD in message
    assert info.value.code == "secret_unavailable" and isinstance(info.value, ConfigurationError)
    assert not other.can_decrypt(token, context=FIELD)


@pytest.mark.parametrize("position", [0, 5, 20, -1])
def test_tampering_is_detected(box: SecretBox, position: int) -> None:
    token = box.encrypt("pay me $100", context=FIELD)
    prefix = f"v1.{box.key_id}."
    body = bytearray(base64.urlsafe_b64decode(token[len(prefix):] + "=" * (-len(token[len(prefix):]) % 4)))
    body[position] ^= 0x01
    forged = prefix + base64.urlsafe_b64encode(bytes(body)).rstrip(b"=").decode()
    with pytest.raises(SecretUnavailable, match="fails authentication.*altered"):
        box.decrypt(forged, context=FIELD)


def test_malformed_tokens_are_refused_clearly(box: SecretBox) -> None:
    token = box.encrypt("x", context=FIELD)
    cases = {
        "plain text": "not a Maestro ciphertext",
        token.replace("v1.", "v9.", 1): "format v9",
        token[:20]: "truncated",
        token + "!": "not a Maestro ciphertext",
    }
    for bad, message in cases.items():
        with pytest.raises(SecretUnavailable, match=message):
            box.decrypt(bad, context=FIELD)


def test_nonces_are_unique(box: SecretBox) -> None:
    tokens = {box.encrypt("same plaintext", context=FIELD) for _ in range(2000)}
    assert len(tokens) == 2000
    nonces = {base64.urlsafe_b64decode(t.split(".")[2] + "==")[:12] for t in tokens}
    assert len(nonces) == 2000


def test_rotation_re_encrypts_and_the_old_secret_no_longer_opens(box: SecretBox) -> None:
    new = SecretBox.from_secret(SECRET_B)
    pairs = [(box.encrypt(f"credential {i}", context=f"config-db/{i}"), f"config-db/{i}") for i in range(5)]
    rotated = rotate(pairs, box, new)
    assert len(rotated) == 5
    for i, token in enumerate(rotated):
        assert key_id_of(token) == new.key_id
        assert new.decrypt(token, context=f"config-db/{i}") == f"credential {i}"
        assert not box.can_decrypt(token, context=f"config-db/{i}")
        with pytest.raises(SecretUnavailable, match="secret file does not match"):
            box.decrypt(token, context=f"config-db/{i}")


def test_rotation_can_be_rerun_and_is_all_or_nothing(box: SecretBox) -> None:
    new = SecretBox.from_secret(SECRET_B)
    done = new.encrypt("already moved", context="a")
    todo = box.encrypt("still old", context="b")
    assert rotate([(done, "a"), (todo, "b")], box, new)[0] == done  # untouched, but checked

    third = SecretBox.from_secret(b"c" * 40)
    stranger = third.encrypt("from elsewhere", context="c")
    with pytest.raises(SecretUnavailable, match="secret file does not match"):
        rotate([(todo, "b"), (stranger, "c")], box, new)


def test_short_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="at least 32"):
        SecretBox.from_secret(b"x" * 31)
    path = tmp_path / "secret"
    path.write_bytes(b"  " + b"x" * 31 + b"\n\n")  # 31 bytes once stripped
    with pytest.raises(ConfigurationError, match=r"secret file .*31 bytes; at least 32"):
        SecretBox.from_file(path)
    with pytest.raises(ConfigurationError, match="does not exist"):
        SecretBox.from_file(tmp_path / "missing")


def test_file_with_trailing_newline_is_the_same_secret(tmp_path: Path, box: SecretBox) -> None:
    path = tmp_path / "secret"
    path.write_bytes(SECRET_A + b"\n")
    from_file = SecretBox.from_file(path)
    assert from_file.key_id == box.key_id
    assert from_file.decrypt(box.encrypt("x", context=FIELD), context=FIELD) == "x"
    path.write_bytes(b"\t" + SECRET_A + b" \r\n")
    assert SecretBox.from_file(path).key_id == box.key_id


def test_generated_secrets_are_usable_and_distinct(tmp_path: Path) -> None:
    first, second = generate_secret(), generate_secret()
    assert first != second and len(first) >= 32
    path = tmp_path / "secret"
    path.write_bytes(first + b"\n")
    assert SecretBox.from_file(path).key_id == SecretBox.from_secret(first).key_id


def test_check_secret_at_start_up(box: SecretBox) -> None:
    check_secret(box, None, FIELD)  # fresh installation: nothing to check
    sample = box.encrypt("x", context=FIELD)
    check_secret(box, sample, FIELD)
    with pytest.raises(SecretUnavailable, match="cannot use its stored credentials.*secret file does not match"):
        check_secret(SecretBox.from_secret(SECRET_B), sample, FIELD)


def test_redact() -> None:
    line = "connect postgres://bob:s3cr3t-pw@db/x with token tok-s3cr3t-pw-long"
    assert redact(line, ["s3cr3t-pw", "tok-s3cr3t-pw-long", ""]) == "connect postgres://bob:***@db/x with token ***"
    assert redact("nothing here", []) == "nothing here"


def test_docstring_examples() -> None:
    result = doctest.testmod(secrets_module)
    assert result.attempted > 0 and result.failed == 0
