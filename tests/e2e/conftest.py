"""pytest wiring for the end-to-end tests: one fresh broker per test (helpers.Broker).

Extra broker flags come from the closest `broker_args` marker (a test's own marker replaces
its module's `pytestmark`):

    @pytest.mark.broker_args("--webhook-allow-private", "--subscription-min-seconds", 2)

`receivers` makes webhook receivers (receiver.Receiver) that are closed before the broker
stops, so no broker request waits on a sleeping handler at shutdown."""

import pytest

from helpers import Broker, sanitizer_problems


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "broker_args(*flags): extra command-line flags for the broker fixture")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


@pytest.fixture
def broker(tmp_path, request):
    """A fresh herold for one test. At teardown: SIGTERM, exit code 0, no sanitizer report."""
    marker = request.node.get_closest_marker("broker_args")
    b = Broker(tmp_path, marker.args if marker else ())
    try:
        b.start()
    except BaseException:
        b.close_zmq()
        raise
    yield b
    try:
        b.close_zmq()
    finally:
        rc = b.stop()
        text = b.pump.finish()
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
def receivers(broker):
    """A factory of webhook receivers: receivers("name") -> receiver.Receiver. Depends on
    broker so that the receivers are closed first at teardown."""
    from receiver import Receiver

    made = []

    def make(name="receiver"):
        r = Receiver(name)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()
