"""What an operator sees of the broker process: each thread carries its role's name, so
that `top -H`, `perf top` and gdb tell the service thread (the process's own name) from
ingest, its commit thread, the journal's worker, the store writer and webhook delivery."""

import pathlib


def thread_names(pid):
    return sorted((task / "comm").read_text().strip()
                  for task in pathlib.Path("/proc/%d/task" % pid).iterdir())


def test_threads_carry_their_roles_names(broker):
    names = thread_names(broker.proc.pid)
    for role in ("ingest", "ingest-commit", "journal-worker", "store-writer", "webhook"):
        assert names.count(role) == 1, "threads %r: not one named %r" % (names, role)
    # A sanitizer's runtime may add a thread of its own under the process's name.
    assert "herold" in names, "threads %r: none keeps the process's name" % names
