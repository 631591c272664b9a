"""Where webhooks may connect: the address policy, and the client that applies it when connecting, against
receivers on loopback."""

import datetime
import socket
import ssl
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from tests.support.webhook_receiver import Receiver
from tripmail.config import Settings
from tripmail.errors import InvalidRequest
from tripmail.webhooks.egress import (
    NonPublicAddress,
    PublicOnlyBackend,
    check_webhook_url,
    non_public,
    parse_networks,
    refusal,
    webhook_client,
)

LOOPBACK = parse_networks("127.0.0.0/8")


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "link-local"),
        ("169.254.0.1", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "shared (carrier-grade NAT)"),
        ("100.127.255.254", "shared (carrier-grade NAT)"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("fec0::1", "site-local"),
        ("192.0.2.10", "special-purpose"),
        ("198.18.0.1", "special-purpose"),
        ("2001:db8::1", "special-purpose"),
        # IPv4-mapped IPv6 is the IPv4 address it maps.
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::ffff:100.64.0.1", "shared (carrier-grade NAT)"),
        # Public.
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("100.63.255.255", None),
        ("100.128.0.0", None),
        ("172.15.255.255", None),
        ("172.32.0.0", None),
        ("::ffff:8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_the_kind_of_each_address(address: str, kind: str | None) -> None:
    assert non_public(ip_address(address)) == kind
    assert (refusal(ip_address(address), ()) is None) == (kind is None)


def test_a_refusal_names_the_address_the_host_and_the_setting() -> None:
    metadata = ip_address("169.254.169.254")
    assert refusal(metadata, ()) == (
        "webhook address 169.254.169.254 is not public (link-local); see TRIPMAIL_WEBHOOK_ALLOW_NETWORKS"
    )
    assert refusal(ip_address("127.0.0.1"), (), host="localhost") == (
        "webhook address 127.0.0.1 of localhost is not public (loopback); see TRIPMAIL_WEBHOOK_ALLOW_NETWORKS"
    )


def test_allowed_networks_let_their_addresses_by_and_no_others() -> None:
    allowed = parse_networks("10.20.0.0/16, 127.0.0.2 fd00:1::/64")
    assert [str(network) for network in allowed] == ["10.20.0.0/16", "127.0.0.2/32", "fd00:1::/64"]
    for address in ("10.20.3.4", "127.0.0.2", "::ffff:10.20.0.1", "fd00:1::5", "8.8.8.8"):
        assert refusal(ip_address(address), allowed) is None, address
    for address in ("10.21.0.1", "127.0.0.1", "fd00:2::1", "169.254.169.254"):
        assert refusal(ip_address(address), allowed) is not None, address


def test_the_setting_refuses_what_is_not_a_network() -> None:
    assert Settings(webhook_allow_networks="").webhook_allowed_networks == ()
    assert Settings(webhook_allow_networks="10.0.0.1/8").webhook_allowed_networks == parse_networks("10.0.0.0/8")
    with pytest.raises(ValidationError, match=r"TRIPMAIL_WEBHOOK_ALLOW_NETWORKS: '10\.0\.0\.300/8' is not a network"):
        Settings(webhook_allow_networks="127.0.0.0/8,10.0.0.300/8")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://[::1]/hook",
        "https://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/",
        "http://[::ffff:127.0.0.1]/",
        # Other spellings of 127.0.0.1 that URL parsers and resolvers accept.
        "http://2130706433/",
        "http://0x7f.1/",
        "http://127.1/",
    ],
)
def test_a_url_whose_host_is_a_non_public_address_is_refused_naming_the_field(url: str) -> None:
    with pytest.raises(InvalidRequest, match="which is not public") as refused:
        check_webhook_url(url, ())
    assert refused.value.field == "url"
    assert "TRIPMAIL_WEBHOOK_ALLOW_NETWORKS" in refused.value.detail


@pytest.mark.parametrize(
    "url", ["https://hooks.example/in", "http://8.8.8.8/x", "http://localhost/x", "ftp://x", "not a url"]
)
def test_names_public_addresses_and_non_urls_are_left_to_the_other_checks(url: str) -> None:
    check_webhook_url(url, ())


def test_an_allowed_network_is_taken_at_the_api_too() -> None:
    check_webhook_url("http://127.0.0.2:9000/hook", parse_networks("127.0.0.2"))
    with pytest.raises(InvalidRequest):
        check_webhook_url("http://127.0.0.1:9000/hook", parse_networks("127.0.0.2"))


def test_the_client_refuses_loopback_before_any_request_reaches_it() -> None:
    with Receiver.running([200], host="127.0.0.1") as receiver, webhook_client(()) as client:
        for url in (receiver.url, f"http://localhost:{receiver.port}/hook"):
            with pytest.raises(NonPublicAddress, match=r"webhook address 127\.0\.0\.1 .*is not public \(loopback\)"):
                client.post(url, content=b"{}")
    assert receiver.received == []


def test_an_allowed_network_is_posted_to() -> None:
    with Receiver.running([200]) as receiver, webhook_client(parse_networks("127.0.0.2")) as client:
        assert client.post(receiver.url, content=b"{}").status_code == 200
    assert len(receiver.received) == 1


class Recording(httpcore.SyncBackend):
    """The real backend, recording the host each connection was made to."""

    def __init__(self) -> None:
        self.hosts: list[str] = []

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        self.hosts.append(host)
        return super().connect_tcp(host, port, timeout, local_address, socket_options)


def test_the_connection_goes_to_the_checked_address_and_the_host_header_keeps_the_name() -> None:
    recording = Recording()
    backend = PublicOnlyBackend(LOOPBACK, inner=recording)
    pool = httpcore.ConnectionPool(network_backend=backend)
    with Receiver.running([200], host="127.0.0.1") as receiver, pool:
        response = pool.request("POST", f"http://localhost:{receiver.port}/hook", content=b"{}")
    assert response.status == 200
    # Connected by address: nothing resolves the name a second time after the check.
    assert recording.hosts == ["127.0.0.1"]
    [(headers, _)] = receiver.received
    assert headers["Host"] == f"localhost:{receiver.port}"


def test_every_address_of_a_name_is_refused_when_none_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    def resolves_to_private(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in ("10.0.0.7", "127.0.0.1")]

    monkeypatch.setattr(socket, "getaddrinfo", resolves_to_private)
    recording = Recording()
    with pytest.raises(NonPublicAddress, match=r"10\.0\.0\.7 of rebound\.example is not public \(private\)"):
        PublicOnlyBackend((), inner=recording).connect_tcp("rebound.example", 80)
    assert recording.hosts == []


@contextmanager
def tls_receiver(workdir: Path) -> Iterator[tuple[int, Path]]:
    """An HTTPS receiver on 127.0.0.1 whose certificate names `localhost` only (no address); its port and the
    certificate, which a client trusts as its own CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = workdir / "cert.pem", workdir / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], cert_file
    finally:
        server.shutdown()
        server.server_close()


def test_tls_checks_the_certificate_against_the_name_not_the_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tls_receiver(tmp_path) as (port, cert_file):
        # The operator's way to trust a private CA, read by the client's TLS context.
        monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
        with webhook_client(LOOPBACK) as client:
            assert client.post(f"https://localhost:{port}/hook", content=b"{}").status_code == 204
            # By address, the certificate (which names localhost only) does not match.
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                client.post(f"https://127.0.0.1:{port}/hook", content=b"{}")
