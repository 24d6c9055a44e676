"""A small certificate authority for the broker's TLS listener, tests and deployments.

A deployment needs a server certificate that devices can check against a CA they were
given at installation; tests need the same thing on loopback, plus a second, untrusted
CA to prove that the broker's identity is really checked. Keys are ECDSA P-256 (fast to
make, accepted by Mosquitto/OpenSSL and by every TLS stack on devices); private keys
are written with mode 0600. ``homecare devices ca init`` calls :func:`make_ca`.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> ca = make_ca(folder)
>>> cert, key = ca.issue_server(folder, ["localhost", "127.0.0.1"])
>>> cert.name, key.name, oct(key.stat().st_mode & 0o777)
('server.crt', 'server.key', '0o600')
>>> load_ca(folder).cert == ca.cert
True
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from homecare.errors import ConfigError

CA_CERT = "ca.crt"
CA_KEY = "ca.key"


class TlsError(ConfigError):
    """A CA or certificate file is missing or unreadable; the message says which."""


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write a private key readable by its owner only (created 0600, never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "homecare"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """A CA signs certificates; a server or client signs handshakes and agrees keys (ECDHE)."""
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=not ca, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _san(hostnames: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


@dataclass(frozen=True)
class Ca:
    """A CA on disk: its certificate (give it to devices) and its key (keep it secret)."""

    cert: Path
    key: Path

    def _load(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        try:
            cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
            key = serialization.load_pem_private_key(self.key.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise TlsError(f"cannot read the CA {self.cert} / {self.key}: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TlsError(f"{self.key} is not an EC key made by homecare")
        return cert, key

    def _issue(
        self,
        folder: Path,
        name: str,
        common_name: str,
        usage: x509.ObjectIdentifier,
        hostnames: Sequence[str],
        days: int,
    ) -> tuple[Path, Path]:
        ca_cert, ca_key = self._load()
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )  # fmt: skip
        if hostnames:
            builder = builder.add_extension(_san(hostnames), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
        _write_key(key_path, key)
        _write_cert(cert_path, cert)
        return cert_path, key_path

    def issue_server(
        self, folder: Path, hostnames: Sequence[str], *, name: str = "server", days: int = 825
    ) -> tuple[Path, Path]:
        """A server certificate for ``hostnames`` (DNS names or IP addresses): (cert, key)."""
        if not hostnames:
            raise ValueError("a server certificate needs at least one hostname or address")
        return self._issue(
            folder, name, hostnames[0], ExtendedKeyUsageOID.SERVER_AUTH, hostnames, days
        )

    def issue_client(
        self, folder: Path, common_name: str, *, name: str | None = None, days: int = 825
    ) -> tuple[Path, Path]:
        """A client certificate (for brokers that require them): (cert, key)."""
        return self._issue(
            folder, name or common_name, common_name, ExtendedKeyUsageOID.CLIENT_AUTH, [], days
        )


def make_ca(folder: Path, *, common_name: str = "homecare CA", days: int = 3650) -> Ca:
    """Create a CA in ``folder`` (``ca.crt``, ``ca.key``); refuses to overwrite one."""
    ca = Ca(folder / CA_CERT, folder / CA_KEY)
    if ca.cert.exists() or ca.key.exists():
        raise TlsError(f"a CA already exists in {folder}; remove it first to make a new one")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    _write_key(ca.key, key)
    _write_cert(ca.cert, cert)
    return ca


def load_ca(folder: Path) -> Ca:
    """The CA made earlier in ``folder``."""
    ca = Ca(folder / CA_CERT, folder / CA_KEY)
    if not ca.cert.exists() or not ca.key.exists():
        raise TlsError(f"no CA in {folder}: run `homecare devices ca init {folder}` first")
    return ca
