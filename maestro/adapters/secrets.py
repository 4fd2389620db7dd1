"""Encrypted credentials: AES-256-GCM under a key derived from one master secret file.

Maestro stores credentials it must use later (service-account keys, OAuth client secrets, source
database passwords, Git tokens, Slack webhooks) inside events, so they live forever in an
append-only log and in every backup of it. Each one is sealed here before it is appended::

    >>> box = SecretBox.from_secret(b"0123456789abcdef0123456789abcdef")
    >>> token = box.encrypt("hunter2", context="config-slack/webhook_url")
    >>> token.startswith("v1." + box.key_id + ".")
    True
    >>> box.decrypt(token, context="config-slack/webhook_url")
    'hunter2'

A token is ``v1.<key id>.<base64url(nonce || ciphertext || tag)>``:

- ``v1`` names this format (HKDF-SHA256 -> AES-256-GCM, 96-bit random nonce), so a later format
  can be added beside it;
- the key id is a fingerprint of the *derived* key, so an operator can tell which secret sealed a
  credential ("the secret file does not match") without anything about the secret leaking;
- the version, key id and the caller's ``context`` (the stream and field the credential belongs to)
  are the AES-GCM associated data: a token copied into another field, or with its header edited,
  fails authentication instead of decrypting.

Unlike the original (a key made by padding the secret with a constant, no key id), a wrong or lost
secret is reported as such, and ``rotate`` moves every credential to a new secret.

Keep secrets out of logs: hold plaintexts in ``pydantic.SecretStr`` (its repr is masked) and pass
the log formatter's output through :func:`redact` with the credentials in use.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from maestro.errors import ConfigurationError, SecretUnavailable

__all__ = ["MIN_SECRET_BYTES", "SecretBox", "check_secret", "generate_secret", "key_id_of", "redact", "rotate"]

#: A master secret shorter than this is refused. HKDF is not a password hash: it adds no work
#: factor, so the secret itself must carry the entropy (32 random bytes = 256 bits).
MIN_SECRET_BYTES = 32

_VERSION = "v1"
_INFO = b"maestro credentials v1"  # HKDF info: binds the derived key to this one purpose
_KID_LABEL = b"maestro key id v1"
_NONCE_BYTES = 12  # 96 bits, the size GCM is specified for
_TOKEN = re.compile(r"(v\d+)\.([0-9a-f]{8})\.([A-Za-z0-9_-]+)")  # fullmatch: "$" allows a trailing newline


def generate_secret() -> bytes:
    """A new master secret to write to the secret file (48 random bytes, base64url, 64 chars)."""
    return base64.urlsafe_b64encode(os.urandom(48))


def key_id_of(token: str) -> str:
    """The key id in a token's header (no decryption; raises ``SecretUnavailable`` if malformed)."""
    return _parse(token, context=None)[1]


class SecretBox:
    """Seals and opens credentials with one master secret. Thread-safe; holds no mutable state."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigurationError(
                f"the master secret is {len(secret)} bytes; at least {MIN_SECRET_BYTES} are required "
                "(generate one with `python -c \"import secrets; print(secrets.token_urlsafe(48))\"`)"
            )
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret)
        self._aead = AESGCM(key)
        # A fingerprint of the derived key, never of the secret: knowing it helps no attacker, and
        # two secrets that derive the same key (impossible in practice) would share it, correctly.
        self.key_id: str = hmac.new(key, _KID_LABEL, hashlib.sha256).hexdigest()[:8]

    @classmethod
    def from_secret(cls, secret: bytes) -> SecretBox:
        """A box from secret bytes held in memory. For development and tests; production reads a file."""
        return cls(secret)

    @classmethod
    def from_file(cls, path: Path) -> SecretBox:
        """A box from the master secret file: its bytes, stripped of surrounding whitespace.

        Stripping means ``echo "$SECRET" > file`` (trailing newline) and an editor's final newline
        give the same key as the bare bytes.
        """
        try:
            secret = Path(path).read_bytes().strip()
        except FileNotFoundError:
            raise ConfigurationError(f"the secret file {str(path)!r} does not exist") from None
        except OSError as exc:
            raise ConfigurationError(f"cannot read the secret file {str(path)!r}: {exc.strerror}") from exc
        try:
            return cls(secret)
        except ConfigurationError as exc:
            raise ConfigurationError(f"secret file {str(path)!r}: {exc.message}") from None

    def __repr__(self) -> str:
        return f"SecretBox(key_id={self.key_id!r})"

    def encrypt(self, plaintext: str, *, context: str) -> str:
        """Seal ``plaintext`` for the field named by ``context``; a fresh random nonce every call."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), self._aad(self.key_id, context))
        body = base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")
        return f"{_VERSION}.{self.key_id}.{body}"

    def decrypt(self, token: str, *, context: str) -> str:
        """Open a token sealed for ``context``.

        Raises ``SecretUnavailable`` saying which of three things is wrong: the token is not one of
        ours, it was sealed under another secret (names both key ids), or it fails authentication
        (altered, or sealed for another context).
        """
        _, kid, blob = _parse(token, context=context)
        if kid != self.key_id:
            raise SecretUnavailable(
                f"the credential for {context!r} was encrypted with key {kid}, but the configured secret "
                f"file gives key {self.key_id}: the secret file does not match. Restore the secret it was "
                "written with, or re-encrypt with `maestro secrets rotate` while both are at hand.",
                context=context, token_key_id=kid, key_id=self.key_id,
            )
        nonce, sealed = blob[:_NONCE_BYTES], blob[_NONCE_BYTES:]
        try:
            plaintext = self._aead.decrypt(nonce, sealed, self._aad(kid, context))
        except InvalidTag:
            raise SecretUnavailable(
                f"the credential for {context!r} fails authentication under key {kid}: it was altered, "
                "or it was copied from another field",
                context=context, key_id=kid,
            ) from None
        return plaintext.decode("utf-8")

    def can_decrypt(self, token: str, *, context: str) -> bool:
        """True if :meth:`decrypt` would succeed (key matches and the token authenticates)."""
        try:
            self.decrypt(token, context=context)
        except SecretUnavailable:
            return False
        return True

    @staticmethod
    def _aad(kid: str, context: str) -> bytes:
        # The header is authenticated too, so editing the version or key id is detected. The NUL
        # keeps header and context apart (no context can make "v1.<kid>" ambiguous).
        return f"{_VERSION}.{kid}".encode("ascii") + b"\x00" + context.encode("utf-8")


def rotate(tokens: Iterable[tuple[str, str]], old: SecretBox, new: SecretBox) -> list[str]:
    """Re-encrypt ``(token, context)`` pairs from ``old`` to ``new``, in order.

    All tokens are opened before any result is returned, so one unreadable credential aborts the
    whole rotation rather than leaving it half done. Tokens already under ``new`` (checked, not
    trusted) are returned unchanged, so a rotation interrupted after some appends can be rerun.
    """
    pairs = list(tokens)
    plaintexts: list[str | None] = []
    for token, context in pairs:
        if key_id_of(token) == new.key_id:
            new.decrypt(token, context=context)  # authenticate it; keep the token as it is
            plaintexts.append(None)
        else:
            plaintexts.append(old.decrypt(token, context=context))
    return [
        token if plain is None else new.encrypt(plain, context=context)
        for (token, context), plain in zip(pairs, plaintexts, strict=True)
    ]


def check_secret(box: SecretBox, sample_token: str | None, context: str) -> None:
    """At start-up: fail fast if the configured secret cannot open an existing credential.

    ``sample_token`` is any stored credential (``None`` on a fresh installation: nothing to check).
    Better to refuse to start than to come up and fail every run that needs a credential.
    """
    if sample_token is None:
        return
    try:
        box.decrypt(sample_token, context=context)
    except SecretUnavailable as exc:
        raise SecretUnavailable(f"Maestro cannot use its stored credentials: {exc.message}", **exc.details) from None


def redact(text: str, secrets: Iterable[str], *, mask: str = "***") -> str:
    """Replace every occurrence of each secret in ``text`` (for log lines and error messages).

    >>> redact("POST https://hooks.example/T0/abc123 failed", ["abc123"])
    'POST https://hooks.example/T0/*** failed'

    Longer secrets are replaced first, so a secret containing another is masked whole.
    """
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, mask)
    return text


def _parse(token: str, *, context: str | None) -> tuple[str, str, bytes]:
    match = _TOKEN.fullmatch(token) if isinstance(token, str) else None
    where = f" for {context!r}" if context is not None else ""
    if match is None:
        raise SecretUnavailable(
            f"the credential{where} is not a Maestro ciphertext (expected '{_VERSION}.<key id>.<data>')",
            context=context,
        )
    version, kid, body = match.groups()
    if version != _VERSION:
        raise SecretUnavailable(
            f"the credential{where} uses format {version}, which this Maestro cannot read (upgrade it)",
            context=context,
        )
    try:
        blob = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        blob = b""
    if len(blob) < _NONCE_BYTES + 16:  # nonce + GCM tag: shorter cannot be ours
        raise SecretUnavailable(f"the credential{where} is truncated", context=context, key_id=kid)
    return version, kid, blob
