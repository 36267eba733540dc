"""pytest wiring for the end-to-end tests: one fresh broker per test (helpers.Broker).

Extra broker flags come from the closest `broker_args` marker (a test's own marker replaces
its module's `pytestmark`):

    @pytest.mark.broker_args("--webhook-allow-private", "--subscription-min-seconds", 2)

`receivers` makes webhook receivers (receiver.Receiver) that are closed before the broker
stops, so no broker request waits on a sleeping handler at shutdown.

`durable_broker` is the same broker on each store in turn (the `store` fixture: embedded,
then PostgreSQL in a fresh database of the tests/with-pg server); `durable_receivers` goes
with it."""

import pytest

from helpers import Broker, sanitizer_problems, send_gate_env, slow_disk_env


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "broker_args(*flags): extra command-line flags for the broker fixture")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


def _broker_args(request):
    marker = request.node.get_closest_marker("broker_args")
    return marker.args if marker else ()


def _run_broker(request, b, before_stop=None):
    """Starts b, yields it, and at teardown (after before_stop, when given) stops it and
    checks what it left behind."""
    try:
        b.start()
    except BaseException:
        b.close_zmq()
        raise
    yield b
    try:
        if before_stop is not None:
            before_stop()
        b.close_zmq()
    finally:
        rc = b.stop()
        b.pump.finish()
        text = b.all_stderr_text()  # every run: a restarted broker's earlier runs count too
        problems = sanitizer_problems(text)
        failed = getattr(getattr(request.node, "rep_call", None), "failed", False)
        if failed or rc != 0 or problems or b.client_problems:
            tail = "\n".join(text.splitlines()[-200:])
            print("---- herold stderr (%s), last 200 lines ----\n%s" % (b.stderr_path, tail))
        assert not problems, "sanitizer report in herold stderr (%s): %s" % (
            b.stderr_path, problems)
        assert not b.client_problems, "sanitizer report from a client:\n" + "\n".join(
            b.client_problems)
        assert rc == 0, "herold exit code after SIGTERM: %r (stderr in %s)" % (
            rc, b.stderr_path)


@pytest.fixture
def broker(tmp_path, request):
    """A fresh herold for one test. At teardown: SIGTERM, exit code 0, no sanitizer report."""
    yield from _run_broker(request, Broker(tmp_path, _broker_args(request)))


@pytest.fixture
def slow_disk_broker(tmp_path, request):
    """The broker fixture on a disk whose syncs take 50 ms longer (helpers.slow_disk_env)."""
    yield from _run_broker(request, Broker(tmp_path, _broker_args(request),
                                           env=slow_disk_env()))


@pytest.fixture
def gated_broker(tmp_path, request):
    """The broker fixture with a gate on its service thread: while the file
    broker.send_gate exists, that thread stops at its next send() (helpers.send_gate_env).
    The gate is open at the start, and opened again before the broker stops, so that a
    test that fails while it is shut does not hold the shutdown up."""
    gate = tmp_path / "send-gate"
    b = Broker(tmp_path, _broker_args(request), env=send_gate_env(gate))
    b.send_gate = gate
    yield from _run_broker(request, b, before_stop=lambda: gate.unlink(missing_ok=True))


class Store:
    """The store a durable_broker runs on: name "embedded" (under the broker's --data) or
    "postgresql" (database: a pg.Database of its own; uri: its --store value)."""

    def __init__(self, name, database=None):
        self.name = name
        self.database = database

    @property
    def uri(self):
        return self.database.uri if self.database is not None else None

    @property
    def is_pg(self):
        return self.name == "postgresql"

    def __repr__(self):
        return "<Store %s %r>" % (self.name, self.database)


@pytest.fixture(params=["embedded", "postgresql"])
def store(request):
    """Each test using it runs once per store (the shared conformance of DESIGN 4). A test
    for one store only narrows it:
        @pytest.mark.parametrize("store", ["postgresql"], indirect=True)
    PostgreSQL tests fail (never skip) outside tests/with-pg. At teardown the PostgreSQL
    server is left running, whatever the test did to it, and the database is dropped."""
    if request.param == "embedded":
        yield Store("embedded")
        return
    import pg

    db = pg.Database()
    try:
        yield Store("postgresql", db)
    finally:
        db.drop()


@pytest.fixture
def durable_broker(store, tmp_path, request):
    """A fresh herold on `store` (one run per store); otherwise like `broker`. Its
    restart() comes back on the same data directory or database."""
    yield from _run_broker(request, Broker(tmp_path, _broker_args(request), store.uri))


def _receiver_factory():
    from receiver import Receiver

    made = []

    def make(name="receiver"):
        r = Receiver(name)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


@pytest.fixture
def receivers(broker):
    """A factory of webhook receivers: receivers("name") -> receiver.Receiver. Depends on
    broker so that the receivers are closed first at teardown."""
    yield from _receiver_factory()


@pytest.fixture
def durable_receivers(durable_broker):
    """receivers for tests on durable_broker (closed before it stops)."""
    yield from _receiver_factory()
