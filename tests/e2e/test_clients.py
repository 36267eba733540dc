"""The command-line clients against a real broker: herold-pub (flags, --repeat, JSON lines
on stdin, exit codes) and herold-tail (subscribe, print items, --count, exit codes)."""

import json
import os
import subprocess

import pytest

from helpers import HEROLD_TAIL, TIMEOUT, LinePump, run, sanitizer_problems

EVENT_TIME_MS = 1795773600123  # 2026-11-27T10:00:00.123Z


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# ---- herold-pub ----

def test_pub_flags_publish_one_event_with_every_field(broker):
    async def body():
        c = await broker.connect("anna", groups=("bau",))
        sub = await c.subscribe("/pub")
        done = broker.pub_cli([
            "--resource", "/pub/docs/7", "--readers", "user:zoe,group:bau", "--id", "cli-1",
            "--source", "dms", "--type", "created", "--time", str(EVENT_TIME_MS),
            "--actor", "user:bert", "--kind", "document", "--tenant", "t1",
            "--previous", "/pub/old/7", "--data", '{"title":"x"}'])
        assert done.returncode == 0, done.stderr
        replies = json_lines(done.stdout)
        assert len(replies) == 1, done.stdout
        assert replies[0]["id"] == "cli-1" and replies[0]["ok"] is True
        assert isinstance(replies[0]["seq"], int)

        item = await c.next_item()
        assert item == {
            "id": "%s-%d" % (sub["subscriptionId"], replies[0]["seq"]),
            "subscriptionId": sub["subscriptionId"],
            "subscriptionExpirationDateTime": sub["expirationDateTime"],
            "changeType": "created",
            "resource": "/pub/docs/7",
            "resourceData": {"@odata.type": "#herold.document", "@odata.id": "/pub/docs/7",
                             "id": "7"},
            "tenantId": "t1",
            "previousResource": "/pub/old/7",
            "eventTime": "2026-11-27T10:00:00.123Z",
            "actor": "user:bert",
        }
        await c.close()

    run(body())


def test_pub_flag_defaults_type_updated_and_a_fresh_id(broker):
    async def body():
        c = await broker.connect("anna")
        await c.subscribe("/pub")
        first = broker.pub_cli(["--resource", "/pub/a", "--readers", "*"])
        second = broker.pub_cli(["--resource", "/pub/a", "--readers", "*"])
        assert first.returncode == 0 and second.returncode == 0, (first.stderr, second.stderr)
        r1, r2 = json_lines(first.stdout)[0], json_lines(second.stdout)[0]
        assert r1["ok"] and r2["ok"]
        assert r1["id"] != r2["id"], "the default id is fresh for every run"
        items = [await c.next_item(), await c.next_item()]
        assert [it["changeType"] for it in items] == ["updated", "updated"]
        await c.close()

    run(body())


def test_pub_repeat_publishes_n_events_with_numbered_ids(broker):
    done = broker.pub_cli(["--resource", "/pub/r", "--readers", "*", "--id", "rep",
                           "--repeat", "5"])
    assert done.returncode == 0, done.stderr
    replies = json_lines(done.stdout)
    assert [r["id"] for r in replies] == ["rep-%d" % i for i in range(1, 6)]
    assert all(r["ok"] for r in replies)
    seqs = [r["seq"] for r in replies]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert done.stderr.strip(), "--repeat prints a summary to stderr"


def test_pub_quiet_prints_no_replies(broker):
    done = broker.pub_cli(["--resource", "/pub/q", "--readers", "*", "--repeat", "3",
                           "--quiet"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_pub_stdin_json_lines_all_ok_exits_0(broker):
    async def body():
        c = await broker.connect("anna")
        await c.subscribe("/lines")
        lines = [
            {"id": "l1", "source": "s", "type": "created", "resource": "/lines/1",
             "time": EVENT_TIME_MS, "readers": ["*"], "actor": "l1",
             "data": {"n": 1, "f": 1.5, "b": True, "z": None, "a": [1, "x"]}},
            {"id": "l2", "source": "s", "type": "deleted", "resource": "/lines/2",
             "time": EVENT_TIME_MS, "readers": ["user:anna"], "actor": "l2", "kind": "event"},
        ]
        done = broker.pub_cli([], stdin="".join(json.dumps(x) + "\n" for x in lines))
        assert done.returncode == 0, done.stderr
        replies = json_lines(done.stdout)
        assert [(r["id"], r["ok"]) for r in replies] == [("l1", True), ("l2", True)]
        got = await c.items_until_actor("l2")
        assert [it["actor"] for it in got] == ["l1", "l2"]
        assert got[0]["changeType"] == "created"
        assert got[1]["resourceData"]["@odata.type"] == "#herold.event"
        assert got[1]["eventTime"] == "2026-11-27T10:00:00.123Z"
        await c.close()

    run(body())


def test_pub_stdin_one_refused_exits_1_and_reports_each_reply_in_order(broker):
    good = {"source": "s", "type": "updated", "resource": "/lines/x", "time": EVENT_TIME_MS,
            "readers": ["*"]}
    lines = [dict(good, id="g1"), dict(good, id="b1", type="moved"), dict(good, id="g2"),
             dict(good, id="b2", resource="no-slash")]
    done = broker.pub_cli([], stdin="".join(json.dumps(x) + "\n" for x in lines))
    assert done.returncode == 1, (done.returncode, done.stderr)
    replies = json_lines(done.stdout)
    assert len(replies) == 4, done.stdout
    assert [r["ok"] for r in replies] == [True, False, True, False]
    assert replies[0]["id"] == "g1" and replies[2]["id"] == "g2"
    assert replies[1]["error"] == "bad_change_type"
    assert replies[3]["error"] == "bad_path"
    assert replies[2]["seq"] > replies[0]["seq"]


def test_pub_unknown_flag_is_a_usage_error_exit_2(broker):
    done = broker.pub_cli(["--no-such-flag", "x"])
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)


# ---- herold-tail ----

class Tail:
    def __init__(self, broker, args, env=None):
        assert HEROLD_TAIL.exists(), "%s does not exist: build first" % HEROLD_TAIL
        self.proc = subprocess.Popen(
            [str(HEROLD_TAIL), "--url", broker.ws_url] + list(args),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env)
        self.out = LinePump(self.proc.stdout)
        self.err = LinePump(self.proc.stderr)
        self.broker = broker

    def wait_subscribed(self, count):
        lines = self.err.wait_count("herold-tail: subscribed", count, TIMEOUT)
        assert lines is not None, "herold-tail did not subscribe; stderr:\n" + self.err.text()
        return [line.split() for line in lines]

    def wait(self):
        try:
            rc = self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail("herold-tail did not exit; stdout:\n%s\nstderr:\n%s"
                        % (self.out.text(), self.err.text()))
        out, err = self.out.finish(), self.err.finish()
        if sanitizer_problems(err):
            self.broker.client_problems.append("herold-tail:\n" + err)
        return rc, out, err

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_tail_prints_items_as_json_lines_and_exits_after_count(broker):
    token = broker.token("anna")
    tail = Tail(broker, ["--token", token, "--resource", "/tail", "--resource", "me/x",
                         "--count", "2"])
    try:
        subscribed = tail.wait_subscribed(2)
        ids = {fields[2] for fields in subscribed}
        broker.publish_ok(resource="/tail/1", actor="t1", kind="document")
        broker.publish_ok(resource="/elsewhere/1", actor="not-subscribed")
        broker.publish_ok(resource="/users/anna/x/2", actor="t2", readers=["user:anna"])
        rc, out, err = tail.wait()
    finally:
        tail.kill()
    assert rc == 0, err
    items = json_lines(out)
    assert [it["actor"] for it in items] == ["t1", "t2"]
    assert items[0]["resource"] == "/tail/1"
    assert items[0]["resourceData"] == {"@odata.type": "#herold.document",
                                        "@odata.id": "/tail/1", "id": "1"}
    assert items[1]["resource"] == "/users/anna/x/2"
    assert {it["subscriptionId"] for it in items} == ids
    assert err.count("herold-tail: subscribed") == 2


def test_tail_change_type_and_token_from_environment(broker):
    env = dict(os.environ, HEROLD_TOKEN=broker.token("anna"))
    tail = Tail(broker, ["--resource", "/ct", "--change-type", "created", "--count", "1"],
                env=env)
    try:
        tail.wait_subscribed(1)
        broker.publish_ok(resource="/ct/1", type="updated", actor="updated")
        broker.publish_ok(resource="/ct/1", type="created", actor="created")
        rc, out, err = tail.wait()
    finally:
        tail.kill()
    assert rc == 0, err
    assert [it["actor"] for it in json_lines(out)] == ["created"]


def test_tail_exits_1_when_the_handshake_is_refused(broker):
    tail = Tail(broker, ["--token", "x.y.z", "--resource", "/t", "--count", "1"])
    try:
        rc, out, err = tail.wait()
    finally:
        tail.kill()
    assert rc == 1, (rc, err)
    assert "401" in err, err


def test_tail_exits_1_on_an_error_answer_to_subscribe(broker):
    tail = Tail(broker, ["--token", broker.token("anna"), "--resource", "no-slash",
                         "--count", "1"])
    try:
        rc, out, err = tail.wait()
    finally:
        tail.kill()
    assert rc == 1, (rc, err)


def test_tail_exits_1_when_the_connection_drops(broker):
    tail = Tail(broker, ["--token", broker.token("anna"), "--resource", "/t"])
    try:
        tail.wait_subscribed(1)
        assert broker.stop() == 0
        rc, out, err = tail.wait()
    finally:
        tail.kill()
    assert rc == 1, (rc, err)
