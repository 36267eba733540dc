"""Helpers shared by the benchmark scripts in bench/ (imported from the script's own
directory)."""

import base64
import hashlib
import hmac
import json
import os
import socket

CLK_TCK = os.sysconf("SC_CLK_TCK")

# Broker flags for a load generator that is one user holding every connection and
# subscription: the per-user and per-connection limits lifted.
UNLIMITED_FLAGS = ["--max-connections-per-user", "0", "--max-subscriptions-per-minute",
                   "1000000", "--max-ops-per-second", "1000000"]


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_jwt(secret, claims, header=None):
    """An HS256 JWT signed in Python (independent of herold's signer)."""
    if header is None:
        header = {"alg": "HS256", "typ": "JWT"}
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    signature = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + b64url(signature)


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


def process_cpu_seconds(pid):
    """User + system CPU seconds of a process, all its threads included; None when it
    cannot be read (the process is gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def cpu_model():
    """The CPU's model name from /proc/cpuinfo, or "?"."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"
