"""Where a result came from: versions, git commit and device, recorded beside every training and
evaluation (one function for all of them)."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import numpy as np
import torch

__all__ = ["run_metadata"]


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def run_metadata(device: str | torch.device = "cpu") -> dict:
    """Versions (python, torch, numpy, virolbi), git commit when available, and the device.

    >>> sorted(run_metadata())
    ['device', 'git_commit', 'versions']
    """
    import virolbi

    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu"
    return {"versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "numpy": np.__version__, "virolbi": virolbi.__version__},
            "git_commit": _git_commit(), "device": {"type": dev.type, "name": name}}
