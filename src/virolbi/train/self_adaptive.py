r"""Self-adaptive training (SAT; Huang, Zhang, Zhang, NeurIPS 2020): every training image keeps a
soft target :math:`t_i` (its one-hot label at first) that, from epoch :math:`E_s` on, follows the
model's own predictions by an exponential moving average, and the loss weights each image by its
target's confidence:

.. math::
   t_i \leftarrow \alpha\, t_i + (1 - \alpha)\, p_i, \qquad
   w_i = \max_j t_{i,j}, \qquad
   \mathcal{L} = -\frac{1}{\sum_i w_i} \sum_i w_i \sum_j t_{i,j} \log p_{i,j},

with :math:`p_i` the softmax of the logits of image :math:`i` (detached for the update) and
:math:`\alpha` the momentum (0.9). Before :math:`E_s` the loss is the cross-entropy with the labels.
In the paper's adversarial variant this loss replaces the natural-image term of TRADES
(:mod:`virolbi.train.adversarial`, method ``trades``); the paper trains 100 epochs with
:math:`E_s = 70`.

The targets live with the training run (one row per training image, saved in its checkpoint);
one process only (under DDP each process would update its own copy).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SelfAdaptiveTargets"]


class SelfAdaptiveTargets:
    """The soft targets of SAT for a training set and the loss that uses them.

    Parameters
    ----------
    labels : array-like
        The training labels (position ``i`` = training image ``i`` of the run).
    num_classes : int
        Number of classes.
    momentum : float
        :math:`\\alpha` of the moving average (0.9).
    start_epoch : int
        :math:`E_s`, 0-based: the targets move from this epoch on (the cross-entropy before).

    Examples
    --------
    >>> sat = SelfAdaptiveTargets([0, 1], 2, momentum=0.5, start_epoch=0)
    >>> logits, labels = torch.zeros(2, 2), torch.tensor([0, 1])
    >>> _ = sat.loss(logits, labels, index=torch.tensor([0, 1]), epoch=0)
    >>> sat.targets[0].tolist()
    [0.75, 0.25]
    """

    def __init__(self, labels: Any, num_classes: int, momentum: float = 0.9,
                 start_epoch: int = 0) -> None:
        y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.targets = F.one_hot(y, num_classes).float()
        self.momentum, self.start_epoch = float(momentum), int(start_epoch)

    def loss(self, logits: Tensor, labels: Tensor, index: Tensor, epoch: int) -> Tensor:
        """The summed SAT loss of a batch (``index``: the images' training positions): the
        cross-entropy with ``labels`` before ``start_epoch``; from then on the targets of the batch
        move first, and the weights are rescaled to sum to the batch size, so that the batch mean
        is the paper's loss."""
        index = torch.as_tensor(index, dtype=torch.long)
        if epoch < self.start_epoch:
            return F.cross_entropy(logits.float(), labels, reduction="sum")
        prob = torch.softmax(logits.detach().float(), dim=1).cpu()
        self.targets[index] = self.momentum * self.targets[index] + (1 - self.momentum) * prob
        t = self.targets[index].to(logits.device)
        w = t.max(dim=1).values
        w = w * (len(w) / w.sum())
        per_image = -(t * torch.log_softmax(logits.float(), dim=1)).sum(dim=1)
        return (w * per_image).sum()

    def state_dict(self) -> dict[str, Any]:
        return {"targets": self.targets.clone()}  # momentum and E_s come from the config

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if tuple(state["targets"].shape) != tuple(self.targets.shape):
            raise ValueError(f"self-adaptive targets of shape {tuple(state['targets'].shape)} "
                             f"do not fit a training set of shape {tuple(self.targets.shape)}")
        self.targets = state["targets"].clone().float()
