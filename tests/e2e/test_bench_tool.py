"""herold-bench against a real broker: the load generator behind `make bench` counts every
delivery it expects, so a broker that loses or repeats a notification, or a tool that
miscounts, shows here. Small scenarios only: this checks correctness, never speed."""

import json
import re
import subprocess
import sys

import pytest

from helpers import BUILD, REPO, UNLIMITED_FLAGS, sanitizer_problems

HEROLD_BENCH = BUILD / "bench" / "herold-bench"

pytestmark = pytest.mark.broker_args(*UNLIMITED_FLAGS)


def run_bench(broker, tmp_path, *sets, scenario_text=None):
    token = tmp_path / "token"
    token.write_text(broker.token("bench", groups=("bench",)))
    args = [str(HEROLD_BENCH), "--target", "herold", "--pub", broker.ingest,
            "--sub", "127.0.0.1:%d" % broker.http_port, "--token-file", str(token),
            "--out", str(tmp_path / "run")]
    if scenario_text is not None:
        scenario = tmp_path / "scenario.conf"
        scenario.write_text(scenario_text)
        args += ["--scenario", str(scenario)]
    for s in sets:
        args += ["--set", s]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert not sanitizer_problems(done.stderr), done.stderr
    return done


def test_bench_counts_every_delivery_of_a_small_w1(broker, tmp_path):
    done = run_bench(broker, tmp_path, scenario_text=(
        "# 6 connections x 5 subscriptions, 2 followers per folder: 15 folders\n"
        "name = smoke\nconnections = 6\nsubs_per_conn = 5\nfollowers = 2\n"
        "event_bytes = 200\nevents = 3000\nrate = 0\nwindow = 200\nsources = 2\n"
        "drain_seconds = 5\n"))
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "run.json").read_text())
    assert result["events_sent"] == 3000
    assert result["events_acked"] == 3000
    assert result["expected"] == 6000  # every folder has exactly two followers
    assert result["delivered"] == 6000
    assert result["lost"] == 0 and result["duplicates"] == 0
    assert result["unrecognised"] == 0
    assert result["scenario"]["name"] == "smoke"
    assert result["latency_us"]["max"] >= result["latency_us"]["p50"] > 0
    rates = (tmp_path / "run-rate.csv").read_text().splitlines()
    assert rates[0] == "second,published,delivered"
    assert sum(int(line.split(",")[1]) for line in rates[1:]) == 3000
    assert sum(int(line.split(",")[2]) for line in rates[1:]) == 6000
    cdf = (tmp_path / "run-latency.csv").read_text().splitlines()
    assert cdf[0] == "latency_us,fraction"
    assert float(cdf[-1].split(",")[1]) == 1.0


def test_bench_reports_an_uneven_share_exactly(broker, tmp_path):
    # 7 x 2 = 14 subscriptions with 3 followers each make 4 folders, two of them with a
    # fourth follower: the tool must count what each folder really has.
    done = run_bench(broker, tmp_path, "connections=7", "subs_per_conn=2", "followers=3",
                     "events=500", "publishers=2", "drain_seconds=5")
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "run.json").read_text())
    assert result["events_acked"] == 500
    assert result["lost"] == 0 and result["duplicates"] == 0
    assert result["delivered"] == result["expected"]
    assert 500 * 3 < result["expected"] < 500 * 4


def test_bench_refuses_a_bad_scenario_and_a_bad_token(broker, tmp_path):
    done = run_bench(broker, tmp_path, "conections=3")
    assert done.returncode == 2
    assert "unknown scenario key: conections" in done.stderr
    done = run_bench(broker, tmp_path, "followers=0")
    assert done.returncode == 2
    assert "bad value for followers" in done.stderr
    bad = tmp_path / "bad-token"
    bad.write_text("not-a-token")
    refused = subprocess.run(
        [str(HEROLD_BENCH), "--target", "herold", "--pub", broker.ingest,
         "--sub", "127.0.0.1:%d" % broker.http_port, "--token-file", str(bad),
         "--set", "connections=2", "--set", "events=10"],
        capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert "401" in refused.stderr


@pytest.mark.broker_args("--webhook-allow-private", *UNLIMITED_FLAGS)
def test_bench_counts_webhook_deliveries_too(broker, tmp_path):
    # 4 x 3 subscriptions over 6 folders, plus 3 webhook subscriptions on folders 0-2:
    # those folders have three followers, the others two.
    done = run_bench(broker, tmp_path, "connections=4", "subs_per_conn=3", "followers=2",
                     "webhooks=3", "events=600", "drain_seconds=5")
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "run.json").read_text())
    assert result["scenario"]["webhooks"] == 3
    assert result["events_acked"] == 600
    assert 600 * 2 < result["expected"] < 600 * 3
    assert result["delivered"] == result["expected"]
    assert result["lost"] == 0 and result["duplicates"] == 0


def test_bench_refuses_webhooks_without_herold(tmp_path):
    done = subprocess.run(
        [str(HEROLD_BENCH), "--target", "nats", "--pub", "127.0.0.1:1", "--sub", "127.0.0.1:1",
         "--set", "webhooks=1"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "webhooks are herold's only" in done.stderr


def test_ws_idle_counts_subscribed_connections_and_refusals(broker, tmp_path):
    """bench/ws_idle (behind bench/ws_idle.sh) counts a connection only when the broker
    answered what it asked: the upgrade, and with --subscribe 1 the subscription."""
    tokens = tmp_path / "tokens"
    tokens.write_text(broker.token("bench-1") + "\n" + broker.token("bench-2") + "\n")
    ws_idle = [str(BUILD / "bench" / "ws_idle"), "--port", str(broker.http_port),
               "--token-file", str(tokens), "--count", "40", "--pid", str(broker.proc.pid),
               "--subscribe", "1"]
    done = subprocess.run(ws_idle, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "40 accepted, 0 failed" in done.stdout, done.stdout
    assert "KiB per connection" in done.stdout, done.stdout
    assert not sanitizer_problems(done.stderr), done.stderr

    tokens.write_text(broker.token("bench-1")[:-3] + "abc\n")  # a bad signature
    done = subprocess.run(ws_idle, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout
    assert "0 accepted, 40 failed" in done.stdout, done.stdout
    assert "handshake refused: HTTP/1.1 401" in done.stderr, done.stderr


def test_dedup_bench_finds_exactly_the_retained_events():
    """bench/dedup grows its table through several moves and expires half of it on the way;
    afterwards it looks every retained event up and as many expired ones."""
    done = subprocess.run([str(BUILD / "bench" / "dedup"), "60000", "20000", "5000"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "retained found: 20000 of 20000; expired found: 0 of 20000" in done.stdout, done.stdout
    assert not sanitizer_problems(done.stderr), done.stderr
    done = subprocess.run([str(BUILD / "bench" / "dedup"), "0"], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2 and "usage" in done.stderr


def test_sweep_bench_finds_what_a_walk_finds():
    """bench/sweep checks that what subs hands the sweep (due expirations, moved cursors)
    is exactly what a walk of every persistent subscription finds, and that all of them,
    restored in a random order, are listed in creation order."""
    done = subprocess.run([str(BUILD / "bench" / "sweep"), "3000"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "restored in a random order: 3000 in " in done.stdout, done.stdout
    assert done.stdout.count("\n") >= 7, done.stdout  # command, header, five rounds
    assert not sanitizer_problems(done.stderr), done.stderr


def test_match_bench_prints_what_the_suite_reads_and_checks_the_unrelated_city():
    """bench/match builds every size and the smallest city beside another city's
    subscriptions, and exits 1 unless those leave the city's deliveries as they were; the
    suite reads its rows with the same parser as `make bench`."""
    sys.path.insert(0, str(REPO / "bench"))
    import suite
    done = subprocess.run([str(BUILD / "bench" / "match"), "2000,6000"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not sanitizer_problems(done.stderr), done.stderr
    sizes, unrelated = suite.parse_match_output(done.stdout)
    assert sorted(sizes) == [2000, 6000], done.stdout
    assert sizes[2000]["cost_ratio"] == 1.0 and sizes[6000]["events_per_s"] > 0, done.stdout
    assert unrelated is not None, done.stdout
    assert (unrelated["related"], unrelated["unrelated"]) == (2000, 4000), done.stdout
    assert unrelated["deliveries_per_event"] == sizes[2000]["deliveries_per_event"], done.stdout
    alone, beside = re.search(r"deliveries of the event pool: (\d+) alone, (\d+) beside",
                              done.stdout).groups()
    assert int(alone) > 0 and alone == beside, done.stdout
    done = subprocess.run([str(BUILD / "bench" / "match"), "10"], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2 and "sizes" in done.stderr, done.stderr


def test_suite_adds_the_large_index_to_its_targets(monkeypatch):
    """The suite runs bench/match twice, the sizes and the large index alone, and its table
    of targets has a row for each: the large one says what it measured and whether that
    is within 128 bytes per subscription (here with a small 'large' index)."""
    sys.path.insert(0, str(REPO / "bench"))
    import suite
    monkeypatch.setattr(suite, "MATCH_LARGE", 3000)
    out = {"match": {}, "unrelated": None, "errors": []}
    suite.run_match(str(BUILD), "2000,6000", out)
    suite.run_match(str(BUILD), "3000", out)
    assert out["errors"] == [], out["errors"]
    assert sorted(out["match"]) == [2000, 3000, 6000]
    # The single size prints no comparison, and leaves the first run's in place.
    assert out["unrelated"] is not None and out["unrelated"]["related"] == 2000
    rows = suite.target_rows({}, out, None)
    large = [r for r in rows if r[0].startswith("the index at 3,000 subscriptions")]
    assert len(large) == 1, rows
    measured = out["match"][3000]["bytes_per_sub"]
    assert large[0][2].startswith("%d bytes (" % measured), large
    assert large[0][3] == ("yes" if measured <= 128 else "no"), large
    # Without the 1 M size the rows that need it say so instead of guessing.
    assert ("matcher, one core, 1 M subscriptions (realistic mix)", "≥ 3 M events/s",
            "not measured in this run", "—") in rows
    suite.run_match(str(BUILD), "10", out)
    assert len(out["errors"]) == 1 and "status 2" in out["errors"][0], out["errors"]


def test_suite_rounds_start_at_different_targets():
    """Every round runs every target once, and the rounds start at different targets
    spread over the list, so that a drift in the machine's speed does not favour the
    targets that always run last."""
    sys.path.insert(0, str(REPO / "bench"))
    import suite
    targets = ["herold", "mqtt", "mqtt-ws", "nats", "nats-ws", "redis"]
    orders = [suite.round_order(targets, r, 3) for r in (1, 2, 3)]
    assert orders[0] == targets
    assert all(sorted(o) == sorted(targets) for o in orders), orders
    assert [o[0] for o in orders] == ["herold", "mqtt-ws", "nats-ws"], orders
    assert [o.index("herold") for o in orders] == [0, 4, 2], orders
    assert suite.round_order(["herold"], 1, 1) == ["herold"]
    assert suite.round_order(targets, 1, 1) == targets
