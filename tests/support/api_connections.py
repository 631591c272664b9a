"""Client connections to a running `tripmail api`, told apart by which of its processes serves each."""

import http.client

import psutil


def serving_pid(api: psutil.Process, connection: http.client.HTTPConnection) -> int | None:
    """Which of the api's worker processes holds the server end of this client connection."""
    assert connection.sock is not None
    client_port = connection.sock.getsockname()[1]
    for child in api.children(recursive=True):
        if any(c.raddr and c.raddr.port == client_port for c in child.net_connections(kind="tcp")):
            return child.pid
    return None


def connections_to_each_process(api: psutil.Process, port: int) -> list[http.client.HTTPConnection]:
    """Kept-alive connections, one answered by each of the api's two processes (the kernel picks who accepts)."""
    by_pid: dict[int, http.client.HTTPConnection] = {}
    for _ in range(50):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/healthz")  # not limited: no token
        assert connection.getresponse().read()
        pid = serving_pid(api, connection)
        if pid is not None and pid not in by_pid:
            by_pid[pid] = connection
        else:
            connection.close()
        if len(by_pid) == 2:
            return list(by_pid.values())
    raise AssertionError(f"50 connections reached {len(by_pid)} of the api's 2 processes")
