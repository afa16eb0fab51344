"""A private certificate authority for the local control plane (``sky local up --tls``).

The plane's three services serve TLS with one certificate for ``127.0.0.1`` and
``localhost``, signed by a CA made on this machine; the services, agents and the CLI verify
each other against that CA. Files live in ``$STYX_HOME/local/tls``::

    ca.pem     the CA certificate (what clients trust; not secret)
    cert.pem   the services' certificate chain
    key.pem    the services' private key (0600; the CA's key is never written)

The CA's private key exists only while the certificates are made: nobody can sign another
certificate with this CA afterwards. Certificates are renewed when they are missing, do
not match each other, or expire within ``RENEW_BEFORE``.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from styx.common.clock import SYSTEM_CLOCK, Clock

#: How long a made certificate is valid.
VALIDITY = datetime.timedelta(days=365)
#: Certificates closer than this to expiry are made again at the next start.
RENEW_BEFORE = datetime.timedelta(days=30)
INSTALL_HINT = "pip install cryptography"


class TlsSetupError(Exception):
    """The local CA or certificates could not be made or read; the message says why."""


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the local plane's CA certificate, certificate chain and key."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def under(cls, directory: Path) -> TlsFiles:
        """The files' places in ``directory``."""
        return cls(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")

    def service_env(self) -> dict[str, str]:
        """The environment that makes a service serve with these files and dial its peers
        verified against the CA (the services' ``STYX_TLS_*`` settings)."""
        return {"STYX_TLS_CERT": str(self.cert), "STYX_TLS_KEY": str(self.key), "STYX_TLS_CA": str(self.ca)}


def ensure(directory: Path, clock: Clock = SYSTEM_CLOCK) -> TlsFiles:
    """The CA and certificate under ``directory``, made (again) when absent or expiring."""
    files = TlsFiles.under(directory)
    if _still_good(files, clock):
        return files
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise TlsSetupError(f"--tls needs the cryptography package: {INSTALL_HINT}") from None

    now = datetime.datetime.fromtimestamp(clock.now(), datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Styx local plane CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "styx-local-plane")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        # Both: each service serves, and dials its peers with the same identity.
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    _write(files.key, key_pem, 0o600)
    _write(files.cert, cert.public_bytes(pem) + ca.public_bytes(pem), 0o644)
    _write(files.ca, ca.public_bytes(pem), 0o644)
    return files


def _still_good(files: TlsFiles, clock: Clock) -> bool:
    """Whether all three files exist, the certificate is the CA's and far from expiry."""
    if not all(p.is_file() for p in (files.ca, files.cert, files.key)):
        return False
    try:
        from cryptography import x509
    except ImportError:
        return True  # made elsewhere; grpc itself will say if they are bad
    try:
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    except (OSError, ValueError):
        return False
    now = datetime.datetime.fromtimestamp(clock.now(), datetime.UTC)
    return cert.issuer == ca.subject and cert.not_valid_after_utc - now > RENEW_BEFORE


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` atomically, created with ``mode`` (never wider first)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    tmp.replace(path)
