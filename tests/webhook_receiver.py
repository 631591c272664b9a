"""A webhook receiver on loopback for tests: an HTTP server in a thread of the test process."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver(ThreadingHTTPServer):
    """Answers each POST with the next of `codes` (the last one repeats), keeping what it received."""

    def __init__(self, codes: list[int]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.codes = codes
        self.received: list[tuple[dict[str, str], bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    @classmethod
    @contextmanager
    def running(cls, codes: list[int]) -> Iterator["Receiver"]:
        server = cls(codes)
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
        self.wfile.write(b"no" if code >= 400 else b"ok")

    def log_message(self, *_: Any) -> None:
        return
