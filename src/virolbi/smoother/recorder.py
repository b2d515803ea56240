"""The recorder of the levels an LBI run reaches: for each (level, image), the iterate ``u`` and the
support of :math:`\\gamma` at the first iteration whose sparsity level reaches the target, or where the
image stopped when it cannot reach it (a warning, not an error: docs/reliability.md)."""

from __future__ import annotations

import torch

from virolbi.errors import UnreachedLevel

__all__ = ["LevelRecorder"]


class LevelRecorder:
    """Storage ``(L, B, ...)`` for ``L`` levels (< 1, increasing) of a ``(B, C, H, W)`` batch; ``groups``
    is the number of supports per edge (1 for grouped channels, ``C`` for per-channel ℓ1)."""

    def __init__(self, levels: list[float], x: torch.Tensor, groups: int,
                 records: dict[str, torch.Tensor] | None = None) -> None:
        nl, (b, c, h, w), dev = len(levels), x.shape, x.device
        self.levels = levels
        self.level_tensor = torch.tensor(levels, dtype=torch.float64, device=dev)
        self.next_level = torch.zeros(b, dtype=torch.int64, device=dev)
        if records is not None:  # the compiled path's arrays, adopted as they are (no copy)
            for key in ("u", "support_h", "support_v", "iterations", "sparsity", "reached",
                        "final_iteration"):
                setattr(self, key, records[key])
            return
        self.u = x.new_zeros((nl, b, c, h, w))
        self.support_h = torch.zeros((nl, b, groups, h, w - 1), dtype=torch.bool, device=dev)
        self.support_v = torch.zeros((nl, b, groups, h - 1, w), dtype=torch.bool, device=dev)
        self.iterations = torch.zeros((nl, b), dtype=torch.int64, device=dev)
        self.sparsity = torch.zeros((nl, b), dtype=torch.float64, device=dev)
        self.reached = torch.zeros((nl, b), dtype=torch.bool, device=dev)
        self.final_iteration = torch.zeros(b, dtype=torch.int64, device=dev)

    def _store(self, li: int, sel: torch.Tensor, mask: torch.Tensor, u: torch.Tensor, it,
               k: torch.Tensor, sp: torch.Tensor, reached: bool) -> None:
        self.u[li, sel] = u[mask]
        self.support_h[li, sel], self.support_v[li, sel] = it.active_h[mask], it.active_v[mask]
        self.iterations[li, sel], self.sparsity[li, sel] = k[mask], sp[mask]
        self.reached[li, sel] = reached

    def crossings(self, st, it, sp: torch.Tensor) -> torch.Tensor:
        """Record the levels the running images ``st`` reach at the iterate ``it`` (sparsity ``sp``);
        returns each running image's next level index (``L`` once all are recorded)."""
        nxt = self.next_level[st.idx]
        nl = len(self.levels)
        if not bool((sp >= self.level_tensor[nxt.clamp(max=nl - 1)]).any()):
            return nxt
        for li in range(nl):
            hit = (nxt == li) & (sp >= self.level_tensor[li])
            if bool(hit.any()):
                self._store(li, st.idx[hit], hit, it.u, it, st.k, sp, True)
                nxt = torch.where(hit, nxt + 1, nxt)
        self.next_level[st.idx] = nxt
        return nxt

    def stopped(self, st, it, u_stop: torch.Tensor, sp: torch.Tensor, stuck: torch.Tensor,
                nxt: torch.Tensor, finished: torch.Tensor) -> None:
        """Record the levels the ``stuck`` images can no longer reach, at their last iterate, and the
        final iteration of every ``finished`` image."""
        for li in range(len(self.levels)):
            miss = stuck & (nxt <= li)
            if bool(miss.any()):
                self._store(li, st.idx[miss], miss, u_stop, it, st.k, sp, False)
        self.final_iteration[st.idx[finished]] = st.k[finished]

    def mark_overshoots(self, tolerance: float) -> None:
        """Count a level as not reached where the first iterate past it overshoots it by more than
        ``tolerance`` (a step too large for the image: the path jumped over the level)."""
        over = self.sparsity > self.level_tensor[:, None].to(self.sparsity.device) + tolerance
        self.reached = self.reached & ~over.to(self.reached.device)

    def unreached(self, max_iter: int) -> list[UnreachedLevel]:
        """One record per (image, level) not reached, saying where the image stopped and why."""
        out = []
        for li, level in enumerate(self.levels):
            for i in torch.nonzero(~self.reached[li]).flatten().tolist():
                k, sp = int(self.iterations[li, i]), float(self.sparsity[li, i])
                why = (f"overshot: the first iterate past the level has sparsity {sp:.3f} (the step "
                       "is too large for this image; use a smaller step)" if sp > level else
                       "every edge along which the image changes is already active" if k < max_iter
                       else f"max_iter={max_iter} reached")
                out.append(UnreachedLevel(i, level, sp, k, why))
        return sorted(out, key=lambda r: (r.image, r.level))
