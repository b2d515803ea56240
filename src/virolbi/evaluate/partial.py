"""Resumable evaluation: the running tallies of :func:`virolbi.evaluate.evaluate`, kept after every batch.

An adversarial cell through an expensive model (Table 8 of Zhou et al. 2024 on a TV-layer network:
FGSM and PGD-20 at two radii in four threat models, plus the sanity runs) takes more than an hour on
two cores, and an evaluation is only written when it is complete. With a resume file the harness
records, after every batch,

- the correct/total counts of every row so far and each row's attack parameters,
- the state of every random generator: one per (perturbation, level), which draws the noise and
  PGD's random starts, and torch's global one, which randomised models such as PNI draw their
  weight noise from,
- the seconds spent so far,

under a fingerprint of everything that decides the numbers (the images chosen, batch size, seed,
specs and sanity runs, attack settings, ε convention, EOT samples, preprocessing, and the model's and
preprocessor's weights). An interrupted run called again with the same arguments continues from the
next batch and gives exactly the numbers of an uninterrupted run. A resume file with another
fingerprint, or one that cannot be read, is set aside (with a warning) and the evaluation starts
afresh; nothing is unpickled (the file is JSON, generator states base64). The file is removed when
the evaluation completes.

The file holds nothing per image, so its size does not grow with the images: per row its counts,
and per generator that has drawn anything its Mersenne-Twister state, stored in 2 560 bytes (torch
keeps the 624 32-bit words in 64-bit slots, 5 056 bytes; the upper halves, always zero, are left
out, losslessly) — about 3.4 kB of base64 each. A generator still at its seed (the clean, low
resolution, frequency and FGSM specs draw nothing) is not stored; it is re-created from its seed.
The JSON is written without indentation.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from virolbi.io import save_json

__all__ = ["fingerprint", "ResumeFile", "FORMAT", "READABLE_FORMATS", "RESUME_FILE"]

FORMAT = "virolbi-partial-evaluation/2"
#: Formats :meth:`ResumeFile.restore` reads: version 1 stored every generator, unpacked.
READABLE_FORMATS = ("virolbi-partial-evaluation/1", FORMAT)
RESUME_FILE = "partial-evaluation.json"
"""The resume file's name beside an evaluation's results (``virolbi evaluate``'s output directory,
a ``virolbi reproduce`` cell)."""


def _module_digest(module: Any) -> str:
    """sha256 of a module's ``repr`` (its settings, e.g. the smoother's sparsity and solver) and state
    (names, dtypes, shapes and bytes of every parameter and buffer); of anything that is not a module,
    its ``repr`` alone."""
    h = hashlib.sha256()
    h.update(repr(module).encode())
    if not isinstance(module, nn.Module):
        return h.hexdigest()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def fingerprint(model: nn.Module, preprocess: Any, indices: np.ndarray, work: Sequence[Any],
                settings: dict) -> str:
    """sha256 of what decides an evaluation's numbers: the model's and preprocessor's state, the
    indices of the images (in order), every spec and sanity run (their reprs), and ``settings``
    (batch size, seed, attack settings, ε convention, ...; JSON-serialisable)."""
    h = hashlib.sha256()
    h.update(_module_digest(model).encode())
    h.update(_module_digest(preprocess).encode() if preprocess is not None else b"none")
    h.update(np.asarray(indices, dtype=np.int64).tobytes())
    h.update("\n".join(repr(w) for w in work).encode())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


#: torch's CPU generator state: a 24-byte header, the 624 Mersenne-Twister words in uint64 slots
#: (only their low 32 bits used), a 40-byte tail (the normal-distribution caches).
_MT_HEAD, _MT_WORDS, _MT_SIZE = 24, 624, 5056
_PACKED = "mt32:"


def _encode_state(state: torch.Tensor) -> str:
    """A generator state as base64; torch's CPU layout is packed to 32-bit words (``mt32:``), any
    other state (another layout, a word above 32 bits) is kept byte for byte."""
    raw = state.numpy().tobytes()
    words_end = _MT_HEAD + 8 * _MT_WORDS
    if len(raw) == _MT_SIZE:
        words = np.frombuffer(raw[_MT_HEAD:words_end], dtype="<u8")
        if int(words.max()) < 2**32:
            packed = raw[:_MT_HEAD] + words.astype("<u4").tobytes() + raw[words_end:]
            return _PACKED + base64.b64encode(packed).decode("ascii")
    return base64.b64encode(raw).decode("ascii")


def _decode_state(text: str) -> torch.Tensor:
    """The inverse of :func:`_encode_state` (also reads the unpacked states of format 1)."""
    packed = text.startswith(_PACKED)
    raw = base64.b64decode(text[len(_PACKED):] if packed else text, validate=True)
    if packed:
        words_end = _MT_HEAD + 4 * _MT_WORDS
        if len(raw) != _MT_SIZE - 4 * _MT_WORDS:
            raise ValueError(f"a packed generator state has {len(raw)} bytes")
        words = np.frombuffer(raw[_MT_HEAD:words_end], dtype="<u4").astype("<u8")
        raw = raw[:_MT_HEAD] + words.tobytes() + raw[words_end:]
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8)


def _has_drawn(generator: torch.Generator) -> bool:
    """Whether ``generator`` has left the state its seed gives (it has drawn something)."""
    fresh = torch.Generator().manual_seed(generator.initial_seed())
    return not torch.equal(fresh.get_state(), generator.get_state())


class ResumeFile:
    """The resume file of one evaluation (see the module docstring).

    Parameters
    ----------
    path : str or os.PathLike
        Where the tallies are kept (JSON, written atomically after every batch).
    fingerprint : str
        :func:`fingerprint` of the evaluation: a file recorded under another one is not resumed.
    """

    def __init__(self, path: str | os.PathLike, fingerprint: str) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint

    def restore(self, counts: dict, generators: dict[tuple, torch.Generator],
                spec_of: dict[tuple, Any], n_batches: int) -> tuple[int, float]:
        """Fill ``counts`` (row key -> [correct, total, spec, params]) and the generators from the
        file of an evaluation of ``n_batches`` batches; return (batches already done, seconds
        spent). (0, 0.0) and nothing changed when there is no usable file."""
        if not self.path.is_file():
            return 0, 0.0
        try:
            state = json.loads(self.path.read_text())
            done, elapsed = self._unpack(state, counts, generators, spec_of, n_batches)
        except (ValueError, KeyError, TypeError, AttributeError, RuntimeError, OSError) as exc:
            warnings.warn(f"{self.path}: not resumed ({exc}); evaluating from the first batch",
                          stacklevel=3)
            return 0, 0.0
        return done, elapsed

    def _unpack(self, state: dict, counts: dict, generators: dict, spec_of: dict,
                n_batches: int) -> tuple[int, float]:
        if state.get("format") not in READABLE_FORMATS:
            raise ValueError(f"format {state.get('format')!r} is not {FORMAT!r}")
        if state.get("fingerprint") != self.fingerprint:
            raise ValueError("it was recorded for other images, settings or weights")
        done, elapsed = int(state["batches_done"]), float(state["elapsed_s"])
        if not 0 < done <= n_batches:
            raise ValueError(f"batches_done {done} is not in 1..{n_batches}")
        keys = [tuple(k) for k, _ in state["generators"]]
        if not set(keys) <= set(generators) or len(set(keys)) != len(keys):
            raise ValueError("its generators do not match the specs")
        restored = {}
        for entry in state["counts"]:
            key = tuple(entry["key"])
            restored[key] = [int(entry["correct"]), int(entry["n"]), spec_of[key[:2]],
                             dict(entry["params"])]
        states = [_decode_state(s) for _, s in state["generators"]]
        torch_state = _decode_state(state["torch_rng"])
        for s in states:                   # a malformed state raises here, before anything changes
            torch.Generator().set_state(s)
        if torch_state.numel() != torch.get_rng_state().numel():
            raise ValueError("its torch_rng state is malformed")
        for key, s in zip(keys, states):  # the others have not drawn yet: they stay at their seed
            generators[key].set_state(s)
        torch.set_rng_state(torch_state)
        counts.update(restored)
        return done, elapsed

    def save(self, batches_done: int, counts: dict, generators: dict[tuple, torch.Generator],
             elapsed: float) -> None:
        """Record the tallies after ``batches_done`` batches (atomically; compact JSON, only the
        generators that have drawn)."""
        state = {
            "format": FORMAT, "fingerprint": self.fingerprint, "batches_done": batches_done,
            "elapsed_s": elapsed,
            "counts": [{"key": list(k), "correct": c, "n": n, "params": p}
                       for k, (c, n, _, p) in counts.items()],
            "generators": [[list(k), _encode_state(g.get_state())] for k, g in generators.items()
                           if _has_drawn(g)],
            "torch_rng": _encode_state(torch.get_rng_state()),
        }
        save_json(state, self.path, indent=None)

    def remove(self) -> None:
        """Delete the file (the evaluation is complete)."""
        self.path.unlink(missing_ok=True)
