"""Certificates and keys for a loopback control plane.

kube-apiserver with authentication on needs: a CA, a serving certificate for 127.0.0.1, a client
certificate the tests use as admin (O=system:masters bypasses RBAC, as envtest's admin user does),
and a key pair to sign ServiceAccount tokens (so TokenRequest works without any controller).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = dt.timedelta(days=30)


@dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def serving_cert(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def admin_cert(self) -> Path:
        return self.dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.dir / "admin.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _issue(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    is_ca: bool = False,
    server: bool = False,
    extra_ips: tuple[str, ...] = (),
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    # The in-cluster name and the first service IP: what a pod would dial.
                    x509.DNSName("kubernetes.default.svc"),
                    x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
                    # Where a node reaches the apiserver when one runs (local/node.py).
                    *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in extra_ips),
                ]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not is_ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    return builder.sign(ca_key, hashes.SHA256())


def _issue_from_ca(pki: Pki, name: str, subject: x509.Name, *, server: bool = False,
                   extra_ips: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """DIR/NAME.crt and DIR/NAME.key signed by the PKI's CA, kept when they exist."""
    cert_path, key_path = pki.dir / f"{name}.crt", pki.dir / f"{name}.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    ca_key = serialization.load_pem_private_key((pki.dir / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = _key()
    cert = _issue(subject, key, ca.subject, ca_key, server=server, extra_ips=extra_ips)
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def issue_client_cert(pki: Pki, name: str, cn: str, org: str | None = None) -> tuple[Path, Path]:
    """A client certificate from the PKI's CA (a node's kubelet, kube-proxy, the scheduler):
    DIR/NAME.crt and DIR/NAME.key, kept when they exist."""
    return _issue_from_ca(pki, name, _name(cn, org))


def issue_serving_cert(pki: Pki, name: str, cn: str, ips: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """A server certificate from the PKI's CA for a webhook server the apiserver calls (KServe's
    manager): localhost, 127.0.0.1 and `ips`. DIR/NAME.crt and DIR/NAME.key, kept when they exist."""
    return _issue_from_ca(pki, name, _name(cn), server=True, extra_ips=ips)


def create_pki(directory: Path, extra_ips: tuple[str, ...] = ()) -> Pki:
    """Writes a fresh PKI into `directory` (idempotent: an existing complete one is kept)."""
    pki = Pki(directory)
    if all(p.exists() for p in (pki.ca_cert, pki.serving_cert, pki.admin_cert, pki.sa_key)):
        return pki
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_name = _key(), _name("serin-local-ca")
    ca = _issue(ca_name, ca_key, ca_name, ca_key, is_ca=True)
    _write_key(directory / "ca.key", ca_key)
    pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    for cert_path, key_path, subject, server in (
        (pki.serving_cert, pki.serving_key, _name("kube-apiserver"), True),
        (pki.admin_cert, pki.admin_key, _name("serin-admin", "system:masters"), False),
    ):
        key = _key()
        cert = _issue(subject, key, ca_name, ca_key, server=server, extra_ips=extra_ips)
        _write_key(key_path, key)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    sa_key = _key()
    _write_key(pki.sa_key, sa_key)
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki
