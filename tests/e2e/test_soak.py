"""The soak (bench/soak.py) in its short form, against the binaries under test (so under
ASan and UBSan in that flavour): publishers, a resuming watcher, a flapping webhook,
connection churn and one SIGTERM restart, with no acked event lost on either path and no
sanitizer report in the broker's log."""

import json
import subprocess
import sys
from pathlib import Path

from helpers import BUILD, sanitizer_problems

SOAK = Path(__file__).resolve().parents[2] / "bench" / "soak.py"


def test_short_soak_loses_nothing(tmp_path):
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, str(SOAK), "--build", str(BUILD), "--seconds", "12", "--rate", "100",
         "--churn-clients", "3", "--out", str(out), "--work", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=180)
    log = (tmp_path / "work" / "herold.log").read_text(errors="replace")
    assert not sanitizer_problems(log), log[-5000:]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["events_acked"] > 500
    assert result["watcher_lost"] == 0 and result["webhook_lost"] == 0
    assert result["webhook_503_answers"] > 0, "the webhook never flapped"
    assert result["churn_connections"] > 20
    assert result["rss_kib_second_run"]["start"] is not None, "no restart happened"
