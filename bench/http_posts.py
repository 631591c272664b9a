"""A minimal HTTP/1.1 POST client over kept-alive connections, for the paced latency posts.

httpx cost the bench process ~3.7 ms of CPU per request (a third of a core at 100 requests/s) on the same two
cores as the stack it measures. This writes a request built from bytes and reads the status line, the headers
and a Content-Length body: enough for uvicorn's answers, at a fraction of the cost.
"""

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

# Idle connections are closed well before uvicorn's 5 s keep-alive ends, so none is reused as the server closes it.
IDLE_S = 1.0


class HttpError(Exception):
    """The connection broke or the answer was not HTTP/1.1 as expected."""


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0


class Poster:
    """POSTs JSON bodies to one server, reusing idle connections (most recently used first)."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(base_url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._idle: list[_Connection] = []

    async def post(self, path: str, body: bytes) -> int:
        """The answer's status code; HttpError when the connection fails."""
        connection = await self._connection()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n{self._extra}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        try:
            connection.writer.write(head.encode() + body)
            status_line = await connection.reader.readline()
            length, close = 0, False
            while (line := await connection.reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
                elif name.lower() == "connection" and value.strip().lower() == "close":
                    close = True
            await connection.reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            connection.writer.close()
            raise HttpError(f"{type(exc).__name__}: {exc}") from exc
        parts = status_line.split()
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            connection.writer.close()
            raise HttpError(f"not an HTTP/1.1 answer: {status_line!r}")
        if close:
            connection.writer.close()
        else:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        return int(parts[1])

    async def _connection(self) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if time.monotonic() - connection.idle_since < IDLE_S:
                return connection
            connection.writer.close()
        try:
            reader, writer = await asyncio.open_connection(self._host, self._port)
        except OSError as exc:
            raise HttpError(f"{type(exc).__name__}: {exc}") from exc
        return _Connection(reader, writer)

    def close(self) -> None:
        for connection in self._idle:
            connection.writer.close()
        self._idle.clear()
