"""Shared fixtures: real CIFAR-10 (JPEG) images from ../shared/data, seeded tensors, devices."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_CIFAR_TAR = ROOT.parent / "shared" / "data" / "cifar10-jpeg" / "train.tar.gz"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck")


# Small tensors dominate the suite: one thread avoids oversubscription on the 2-core CI machines.
torch.set_num_threads(1)

TEST_CACHE = ROOT / ".pytest_cache" / "virolbi-data"


def load_shared_cifar(n_per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n_per_class`` images (by file name) of every class of the shared CIFAR-10 JPEG
    copy, as ``uint8 (N, 32, 32, 3)`` and ``int64 (N,)`` labels, read from the tar once and then
    from a small cache under ``.pytest_cache``."""
    if not SHARED_CIFAR_TAR.exists():
        pytest.skip(f"shared data not found: {SHARED_CIFAR_TAR}")
    cached = TEST_CACHE / f"cifar10-jpeg-first{n_per_class}.npz"
    if cached.exists():
        with np.load(cached) as f:
            return f["images"], f["labels"]
    images, labels = _read_shared_cifar(n_per_class)
    TEST_CACHE.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, images=images, labels=labels)
    os.replace(tmp, cached)
    return images, labels


def _read_shared_cifar(n_per_class: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    with tarfile.open(SHARED_CIFAR_TAR, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        wanted = []
        for label, cls in enumerate(CIFAR_CLASSES):
            names = sorted(n for n in members if n.startswith(f"train/{cls}/"))[:n_per_class]
            wanted += [(n, label) for n in names]
        images, labels = [], []
        for name, label in wanted:
            data = tar.extractfile(members[name]).read()
            images.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


@pytest.fixture(scope="session")
def cifar_small() -> tuple[np.ndarray, np.ndarray]:
    """20 real CIFAR-10 (JPEG) images, 2 per class: uint8 (20, 32, 32, 3) and labels."""
    return load_shared_cifar(2)


@pytest.fixture(scope="session")
def cifar_batch(cifar_small) -> torch.Tensor:
    """The same 20 images as a float32 batch (20, 3, 32, 32) in [0, 1]."""
    return torch.from_numpy(cifar_small[0]).permute(0, 3, 1, 2).float() / 255.0


@pytest.fixture(scope="session")
def cifar_crops16(cifar_small) -> tuple[torch.Tensor, torch.Tensor]:
    """The central 16x16 crops of the same 20 images, float (20, 3, 16, 16) in [0, 1], and labels:
    small enough for the adversarial-training tests' linear network."""
    imgs, labels = cifar_small
    x = torch.from_numpy(np.ascontiguousarray(imgs[:, 8:24, 8:24].transpose(0, 3, 1, 2))).float() / 255
    return x, torch.as_tensor(labels, dtype=torch.int64)


def linear_net16(seed: int = 0) -> torch.nn.Module:
    """A seeded linear classifier of 16x16 RGB crops into 10 classes."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 10))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=_devices())
def device(request) -> torch.device:
    """CPU always; CUDA too when present."""
    return torch.device(request.param)


@pytest.fixture(scope="session")
def cifar_image_tree(cifar_small, tmp_path_factory) -> Path:
    """The 20 images of ``cifar_small`` as an ImageFolder tree ``<root>/test/<class>/<i>.png``
    (lossless PNG, so a loader gives back exactly the ``cifar_small`` pixels). Read-only."""
    from PIL import Image

    root = tmp_path_factory.mktemp("tree")
    images, labels = cifar_small
    for i, (img, label) in enumerate(zip(images, labels)):
        d = root / "test" / CIFAR_CLASSES[label]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:03d}.png")
    return root


class TemplateClassifier(torch.nn.Module):
    """Nearest-template classifier: logit_k = -30 ||x - t_k||^2 / d (d pixels). Perfect on its own
    templates and differentiable, so attacks can move it (the scale keeps the softmax from
    saturating, which would zero the gradient)."""

    def __init__(self, templates: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("t", templates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x[0].numel()
        return -30.0 / d * ((x.flatten(1)[:, None, :] - self.t.flatten(1)[None]) ** 2).sum(-1)


@pytest.fixture(scope="session")
def template_classifier() -> type[TemplateClassifier]:
    """The class :class:`TemplateClassifier`: ``template_classifier(x)`` is perfect on ``x``."""
    return TemplateClassifier


@pytest.fixture(scope="module")
def cifar_one_per_class(cifar_small) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """10 real CIFAR images, one per class: float (10, 3, 32, 32) in [0, 1], their labels, and the
    uint8 (10, 32, 32, 3) originals."""
    images, labels = cifar_small
    idx = np.array([np.flatnonzero(labels == c)[0] for c in range(10)])
    x = torch.from_numpy(images[idx]).permute(0, 3, 1, 2).float() / 255.0
    return x, torch.from_numpy(labels[idx]), images[idx]
