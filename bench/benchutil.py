"""Helpers shared by the benchmark scripts in bench/ (imported from the script's own
directory)."""

import socket


def free_ports(count):
    """count distinct loopback ports that were free a moment ago (bound all at once, so the
    kernel cannot hand out one twice)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
