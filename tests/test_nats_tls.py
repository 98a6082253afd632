"""NATS that requires TLS and verifies its clients (mutual TLS), with a private CA, as a
security-minded deployment runs it: a real nats-server with `tls { verify: true }`, certificates
made here. The services, the stack and the CLI's connections use `VDO_NATS_CA_PATH`,
`VDO_NATS_CERT_PATH` and `VDO_NATS_KEY_PATH`; without them the server is not trusted, or does
not let the client in, and a bad setting is named."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import create_database, drop_database
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from tests.harness import WORD_COUNT, start_stack

from vdo_cli.embedded import EmbeddedPostgres, die_with_parent, free_port, nats_server_binary
from vdo_kernel.bus import connect, ensure_stream
from vdo_kernel.settings import Settings, SettingsError
from vdo_kernel.subjects import STREAM, event_subject


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # a client certificate from another CA
    stranger_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    name: str, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, *, server: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()), key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca, ca_key = _ca("vdo test CA")
    server, server_key = _leaf("nats", ca, ca_key, server=True)
    client, client_key = _leaf("vdo", ca, ca_key, server=False)
    other_ca, other_key = _ca("another CA")
    stranger, stranger_key = _leaf("stranger", other_ca, other_key, server=False)
    return Pki(
        ca=_write_cert(ca, root / "ca.pem"),
        server_cert=_write_cert(server, root / "server.pem"),
        server_key=_write_key(server_key, root / "server-key.pem"),
        client_cert=_write_cert(client, root / "client.pem"),
        client_key=_write_key(client_key, root / "client-key.pem"),
        stranger_cert=_write_cert(stranger, root / "stranger.pem"),
        stranger_key=_write_key(stranger_key, root / "stranger-key.pem"),
    )


@pytest.fixture
def tls_nats(pki: Pki, tmp_path: Path) -> Iterator[str]:
    """A JetStream nats-server that requires TLS and a client certificate from the CA."""
    port = free_port()
    config = tmp_path / "nats-tls.conf"
    config.write_text(
        f"listen: 127.0.0.1:{port}\n"
        "jetstream {\n"
        f'  store_dir: "{tmp_path / "jetstream"}"\n'
        "}\n"
        "tls {\n"
        f'  cert_file: "{pki.server_cert}"\n'
        f'  key_file: "{pki.server_key}"\n'
        f'  ca_file: "{pki.ca}"\n'
        "  verify: true\n"
        "  timeout: 2\n"
        "}\n"
    )
    log = tmp_path / "nats-tls.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(nats_server_binary()), "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=out,
            preexec_fn=die_with_parent,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"nats-server exited: {log.read_text()[-2000:]}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nats-server did not listen in 30s"
                time.sleep(0.05)
        yield f"tls://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(15)


def settings_for(pki: Pki, *, ca: bool = True, client: bool = True) -> Settings:
    return Settings(
        nats_ca_path=pki.ca if ca else None,
        nats_cert_path=pki.client_cert if client else None,
        nats_key_path=pki.client_key if client else None,
    )


async def test_with_the_ca_and_a_client_certificate_a_service_connects_and_uses_jetstream(
    pki: Pki, tls_nats: str
) -> None:
    nc = await connect(tls_nats, name="test", connect_timeout=10, tls=settings_for(pki).nats_tls())
    try:
        js = nc.jetstream()
        await ensure_stream(js)
        ack = await js.publish(event_subject("JobSubmitted"), b"{}")
        assert ack.stream == STREAM
        assert (await js.stream_info(STREAM)).state.messages == 1
    finally:
        await nc.close()


@pytest.mark.parametrize(
    ("ca", "client", "why"),
    [
        # The server's certificate is from a CA the system does not know.
        (False, True, "CERTIFICATE_VERIFY_FAILED"),
        # The server wants a client certificate and is given none.
        (True, False, "CERTIFICATE_REQUIRED"),
    ],
    ids=["without-the-ca", "without-a-client-certificate"],
)
async def test_without_the_ca_or_a_client_certificate_nothing_connects(
    pki: Pki, tls_nats: str, ca: bool, client: bool, why: str
) -> None:
    tls = settings_for(pki, ca=ca, client=client).nats_tls()
    with pytest.raises(RuntimeError, match=r"cannot reach NATS at tls://127\.0\.0\.1") as refused:
        await connect(tls_nats, name="test", connect_timeout=2, tls=tls)
    assert why in str(refused.value)


async def test_a_client_certificate_from_another_ca_is_refused(pki: Pki, tls_nats: str) -> None:
    tls = Settings(
        nats_ca_path=pki.ca, nats_cert_path=pki.stranger_cert, nats_key_path=pki.stranger_key
    ).nats_tls()
    with pytest.raises(RuntimeError, match=r"cannot reach NATS.*UNKNOWN_CA"):
        await connect(tls_nats, name="test", connect_timeout=2, tls=tls)


def test_no_setting_means_no_context_of_our_own() -> None:
    assert Settings().nats_tls() is None


def test_bad_tls_settings_are_named(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="VDO_NATS_CERT_PATH and VDO_NATS_KEY_PATH go together"):
        Settings(nats_cert_path=pki.client_cert).nats_tls()
    with pytest.raises(SettingsError, match="VDO_NATS_CA_PATH: cannot use"):
        Settings(nats_ca_path=tmp_path / "missing.pem").nats_tls()
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(SettingsError, match="VDO_NATS_CA_PATH: cannot use"):
        Settings(nats_ca_path=garbage).nats_tls()
    # A key that is not the certificate's.
    with pytest.raises(SettingsError, match="VDO_NATS_CERT_PATH / VDO_NATS_KEY_PATH"):
        Settings(nats_cert_path=pki.client_cert, nats_key_path=pki.stranger_key).nats_tls()


@pytest.mark.integration
@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_the_whole_stack_runs_a_job_on_a_nats_that_requires_mutual_tls(
    pki: Pki, tls_nats: str, tmp_path: Path, postgres_server: EmbeddedPostgres
) -> None:
    url = create_database(postgres_server)
    running = start_stack(
        tmp_path / "home",
        url,
        nats_url=tls_nats,
        nats_ca_path=pki.ca,
        nats_cert_path=pki.client_cert,
        nats_key_path=pki.client_key,
    )
    try:
        job_id = running.submit("wc over mutual TLS", WORD_COUNT)
        events = running.wait_for(job_id, timeout=180)
        assert events[-1]["type"] == "JobCompleted", events[-1]
        # The gateway's live updates came over the same NATS.
        with running.api() as api:
            health = api.get("/api/health").json()
        assert health["components"]["nats"]["status"] == "ok", health
    finally:
        running.stack.stop()
        drop_database(postgres_server, url)
