"""Publisher authentication: with --ingest-keys the ingest socket speaks CurveZMQ and only
listed publisher keys get their events in; an unknown key or a plaintext publisher gets
no answer at all and is logged; SIGHUP admits a key added to the file; herold-pub speaks
CURVE with --server-key/--key-file. Without keys, an ingest endpoint other machines can
reach refuses to start unless --ingest-insecure says otherwise.

The publishers here are pyzmq sockets with their own keys (zmq.curve_keypair), not the
broker's code."""

import signal
import subprocess

import msgpack
import pytest
import zmq

from conftest import _run_broker
from helpers import HEROLD, Broker, free_port

NO_ANSWER_MS = 1500


class Publishers:
    def __init__(self, tmp_path):
        self.allowed_public, self.allowed_secret = zmq.curve_keypair()
        self.later_public, self.later_secret = zmq.curve_keypair()
        self.stranger_public, self.stranger_secret = zmq.curve_keypair()
        self.keys_file = tmp_path / "publishers.keys"
        self.write(["# herold publisher keys", self.allowed_public.decode() + "  dms"])

    def write(self, lines):
        self.keys_file.write_text("\n".join(lines) + "\n")


@pytest.fixture
def publishers(tmp_path):
    return Publishers(tmp_path)


@pytest.fixture
def curve_broker(tmp_path, request, publishers):
    b = Broker(tmp_path, ["--ingest-keys", publishers.keys_file])
    yield from _run_broker(request, b)


def server_key(broker):
    text = (broker.data / "ingest.key").read_text()
    return text.split()[1].encode()  # "public <Z85>"


def curve_dealer(broker, public, secret):
    sock = broker.zctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.curve_serverkey = server_key(broker)
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    sock.connect(broker.ingest)
    return sock


def publish(broker, sock, resource):
    sock.send(msgpack.packb(broker.event(resource=resource), use_bin_type=True))
    if not sock.poll(NO_ANSWER_MS, zmq.POLLIN):
        return None
    return msgpack.unpackb(sock.recv_multipart()[-1], raw=False)


def test_listed_key_publishes_and_strangers_get_nothing(curve_broker, publishers):
    b = curve_broker
    ok = curve_dealer(b, publishers.allowed_public, publishers.allowed_secret)
    reply = publish(b, ok, "/dms/a/1")
    assert reply is not None and reply["ok"] is True, reply

    stranger = curve_dealer(b, publishers.stranger_public, publishers.stranger_secret)
    assert publish(b, stranger, "/dms/a/2") is None
    assert b.pump.wait_for(publishers.stranger_public.decode(), 5) is not None, \
        "the refused key is not in the log"

    plain = b.zctx.socket(zmq.DEALER)
    plain.setsockopt(zmq.LINGER, 0)
    plain.connect(b.ingest)
    assert publish(b, plain, "/dms/a/3") is None
    for s in (ok, stranger, plain):
        s.close()


def test_sighup_admits_a_key_added_to_the_file(curve_broker, publishers):
    b = curve_broker
    later = curve_dealer(b, publishers.later_public, publishers.later_secret)
    assert publish(b, later, "/dms/b/1") is None
    later.close()
    publishers.write([publishers.allowed_public.decode() + " dms",
                      publishers.later_public.decode() + " calendar"])
    b.proc.send_signal(signal.SIGHUP)
    assert b.pump.wait_for("SIGHUP: 2 publisher keys loaded", 10) is not None
    later = curve_dealer(b, publishers.later_public, publishers.later_secret)
    reply = publish(b, later, "/dms/b/2")
    assert reply is not None and reply["ok"] is True, reply
    later.close()

    # A damaged file on SIGHUP keeps the keys in use.
    publishers.keys_file.write_text("not-a-key\n")
    b.proc.send_signal(signal.SIGHUP)
    assert b.pump.wait_for("publisher keys kept as they were", 10) is not None
    again = curve_dealer(b, publishers.later_public, publishers.later_secret)
    reply = publish(b, again, "/dms/b/3")
    assert reply is not None and reply["ok"] is True, reply
    again.close()


def test_herold_pub_speaks_curve(curve_broker, publishers, tmp_path):
    b = curve_broker
    key_file = tmp_path / "pub.key"
    made = subprocess.run([str(HEROLD), "keygen", str(key_file)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    public = made.stdout.strip()
    again = subprocess.run([str(HEROLD), "keygen", str(key_file)], capture_output=True, text=True)
    assert again.returncode == 1 and "not overwritten" in again.stderr
    publishers.write([public + " cli"])
    b.proc.send_signal(signal.SIGHUP)
    assert b.pump.wait_for("SIGHUP: 1 publisher keys loaded", 10) is not None
    shown = subprocess.run([str(HEROLD), "ingest-key", "--data", str(b.data)],
                           capture_output=True, text=True)
    assert shown.returncode == 0 and shown.stdout.strip().encode() == server_key(b)
    done = b.pub_cli(["--server-key", shown.stdout.strip(), "--key-file", str(key_file),
                      "--resource", "/dms/c/1", "--readers", "*"])
    assert done.returncode == 0, done.stderr
    assert '"ok":true' in done.stdout.replace(" ", "")


def start_fails(tmp_path, args):
    b = Broker(tmp_path, args)
    with pytest.raises(BaseException):
        b.start()
    b.close_zmq()
    return b.pump.finish()


def test_reachable_plaintext_ingest_needs_insecure(tmp_path, request):
    port = free_port()
    for sub in ("b", "c"):
        (tmp_path / sub).mkdir()
    b = Broker(tmp_path / "b", [])
    b.ingest = "tcp://0.0.0.0:%d" % port
    with pytest.raises(BaseException):
        b.start()
    b.close_zmq()
    assert "reachable from other machines" in b.pump.finish()

    insecure = Broker(tmp_path / "c", ["--ingest-insecure"])
    insecure.ingest = "tcp://0.0.0.0:%d" % port
    gen = _run_broker(request, insecure)
    started = next(gen)
    assert started.pump.wait_for("plaintext and unauthenticated", 5) is not None
    with pytest.raises(StopIteration):
        next(gen)


def test_damaged_keys_file_refuses_to_start(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# one key too short\n" + "x" * 39 + "\n")
    out = start_fails(tmp_path, ["--ingest-keys", keys])
    assert "keys:2: a key is 40 characters of Z85" in out
