"""Atomic writes: what a killed writer leaves behind, and the mode of the files written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from virolbi.io import save_json

_WRITER = """
import sys, time
from virolbi.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("half of it")
    print("writing", flush=True)
    time.sleep(60)
"""


def test_temporary_of_a_killed_writer_is_removed_on_the_next_write(tmp_path):
    target = tmp_path / "results.json"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up
    proc.wait(timeout=30)
    proc.stdout.close()
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(f".results.json.{proc.pid}.")
    other = tmp_path / f".results.json.{os.getpid()}.x.tmp"  # a live process's temporary stays
    other.write_text("in progress")
    save_json({"ok": True}, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([other.name, "results.json"])


def test_written_files_get_the_users_normal_mode(tmp_path):
    old = os.umask(0o027)
    try:
        save_json({"a": 1}, tmp_path / "a.json")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
