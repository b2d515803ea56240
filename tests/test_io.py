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


_FULL_DISK_WRITES = """
import errno, json, resource, signal, sys
import torch
from virolbi.io import atomic_path, save_json
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
seen = []
for name, write in (("a.json", lambda p: save_json(list(range(100)), p)),
                    ("b.pt", lambda p: torch.save(torch.zeros(100), p))):
    target = sys.argv[1] + "/" + name
    try:
        if name.endswith(".json"):
            write(target)
        else:
            with atomic_path(target) as tmp:
                write(tmp)
    except OSError as exc:
        seen.append([errno.errorcode[exc.errno], exc.filename])
print(json.dumps(seen))
"""


def test_a_failed_write_names_the_file_asked_for(tmp_path):
    """Issue #30 item 5: a full disk while writing gave an error naming no file (a failed write()
    has none; PyTorch's writer raises a RuntimeError without one). Both now name the target."""
    import json
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", _FULL_DISK_WRITES, str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout) == [["EFBIG", str(tmp_path / "a.json")],
                                      ["EIO", str(tmp_path / "b.pt")]]
    assert sorted(p.name for p in tmp_path.iterdir()) == []     # no temporaries left
