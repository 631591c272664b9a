"""Free ports on loopback, and whether something listens on one."""

import random
import socket
from pathlib import Path

# Below the kernel's ephemeral range: a port a test frees for a while (a relay stopped for minutes of an outage) is
# otherwise taken meanwhile as the local port of some client connection, and the relay cannot come back on it.
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _below_ephemeral() -> range:
    try:
        first_ephemeral = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first_ephemeral = 32768
    return range(max(1024, first_ephemeral - 12000), first_ephemeral)


def free_port() -> int:
    """A loopback port nothing listens on now, outside the range client connections draw their ports from."""
    candidates = _below_ephemeral()
    for port in random.sample(candidates, k=200):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {candidates.start}-{candidates.stop - 1}")


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0
