"""A webhook receiver on loopback for tests: an HTTP server in a thread of the test process."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# The one loopback address the test stacks let webhooks reach (TRIPMAIL_WEBHOOK_ALLOW_NETWORKS), so that on the same
# stacks 127.0.0.1 and localhost are refused as any address outside the list is.
ALLOWED_HOST = "127.0.0.2"


class Receiver(ThreadingHTTPServer):
    """Answers each POST with the next of `codes` (the last one repeats) and `answer` as the body (else `ok` or
    `no`), keeping what it received."""

    def __init__(self, codes: list[int], host: str = ALLOWED_HOST, answer: bytes | None = None) -> None:
        super().__init__((host, 0), _Handler)
        self.codes = codes
        self.answer = answer
        self.received: list[tuple[dict[str, str], bytes]] = []

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.server_address[0]!s}:{self.port}/hook"

    @classmethod
    @contextmanager
    def running(cls, codes: list[int], host: str = ALLOWED_HOST, answer: bytes | None = None) -> Iterator["Receiver"]:
        server = cls(codes, host, answer)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server
        finally:
            server.shutdown()
            server.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((dict(self.headers), body))
        code = self.server.codes[min(len(self.server.received), len(self.server.codes)) - 1]
        self.send_response(code)
        self.end_headers()
        self.wfile.write(self.server.answer or (b"no" if code >= 400 else b"ok"))

    def log_message(self, *_: Any) -> None:
        return
