"""Resuming an interrupted training run: read its checkpoint (nothing unpickled), check that it is
one of :func:`~virolbi.train.trainer.train`'s and that the configuration is the same up to the keys
that may change, and load model, optimiser, schedule, metrics and RNG states into the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from virolbi.errors import InputError
from virolbi.train.ddp import unwrap_model
from virolbi.train.loop import TrainingRun, set_rng_state

__all__ = ["load_checkpoint", "resume_run"]

# Keys that may differ between an interrupted run and its resumption.
_RESUME_FREE = ("name", "resume", "logging", "device", "output_dir", "eval")


def load_checkpoint(path: Any) -> dict[str, Any]:
    """Read a training checkpoint (``torch.load(weights_only=True)``: nothing is unpickled)."""
    from virolbi.io import load_torch_file

    return load_torch_file(path, "checkpoint")


#: What a training checkpoint written by :func:`train` holds.
_CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "epoch", "rng", "config")


def _check_resumable(ckpt: Any, path: Path, lookahead: bool) -> None:
    """One line when ``ckpt`` is not a training checkpoint of this trainer (e.g. bare weights)."""
    if not isinstance(ckpt, Mapping):
        raise InputError(f"cannot resume from {path}: not a training checkpoint (a "
                         f"{type(ckpt).__name__}, expected the dict virolbi train writes)")
    missing = [k for k in _CHECKPOINT_KEYS + (("lookahead",) if lookahead else ()) if k not in ckpt]
    if missing:
        raise InputError(f"cannot resume from {path}: not a training checkpoint of virolbi train "
                         f"(no {', '.join(missing)}); to start from weights use model.pretrained")


def _comparable(cfg: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in cfg.items() if k not in _RESUME_FREE}
    if isinstance(out.get("compute"), Mapping):
        out["compute"] = {k: v for k, v in out["compute"].items() if k != "threads"}
    return out


def _first_difference(a: Any, b: Any, prefix: str = "") -> str | None:
    """The dotted key of the first difference between two nested configs (None if equal)."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in list(a) + [k for k in b if k not in a]:
            if key not in a or key not in b:
                return prefix + str(key)
            found = _first_difference(a[key], b[key], f"{prefix}{key}.")
            if found is not None:
                return found
        return None
    return None if a == b else prefix.rstrip(".") or "config"


def resume_run(cfg: dict, ckpt_path: Path | None, run: TrainingRun, notes: list[str]) -> int | None:
    """Load ``last.pt`` into the run when asked and present; the epoch it resumes from."""
    if not cfg["resume"] or ckpt_path is None or not ckpt_path.exists():
        if cfg["resume"] and run.info.is_main:
            notes.append(f"resume requested but no checkpoint at {ckpt_path}: starting from scratch")
        return None
    ckpt = load_checkpoint(ckpt_path)
    _check_resumable(ckpt, ckpt_path, run.lookahead is not None)
    from virolbi.train.config import DEFAULTS, merge  # sections added since the run are defaults

    written = merge(DEFAULTS, ckpt.get("config", {}))
    differs = _first_difference(_comparable(written), _comparable(cfg))
    if differs is not None:
        raise InputError(f"cannot resume from {ckpt_path}: it was written with a different "
                         f"configuration ({differs} differs; only name, resume, logging, "
                         "device, output_dir, eval and compute.threads may change)")
    try:
        unwrap_model(run.net).load_state_dict(ckpt["model"])
        run.opt.load_state_dict(ckpt["optimizer"])
        run.sched.load_state_dict(ckpt["scheduler"])
        if run.lookahead is not None:
            run.lookahead.load_state_dict(ckpt["lookahead"])
        if run.monitor is not None and "monitor" in ckpt:
            run.monitor.load_state_dict(ckpt["monitor"])
        if run.adversary is not None and run.adversary.self_adaptive is not None:
            run.adversary.self_adaptive.load_state_dict(ckpt["self_adaptive"])
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot resume from {ckpt_path}: its state does not fit this "
                         f"model and optimizer ({first})") from None
    run.rows[:] = list(ckpt.get("metrics", []))
    set_rng_state(ckpt["rng"])
    return int(ckpt["epoch"])
