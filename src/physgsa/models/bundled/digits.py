"""``digits-resnet``: a small ResNet trained on scikit-learn's bundled digits, at first use.

A trained CNN with no download: 8 x 8 grey digits (1797 images, 10 classes), a stem conv,
three stages of one basic block each (16, 32, 64 channels; the last two with projection
shortcuts), average pooling and a linear classifier. Parameter names follow torchvision
(``layer{s}.{b}.conv{i}``, ``bn{i}``, ``downsample.{0,1}``), so the ResNet adapter reads it
like any torch ResNet. Training is seeded and single-threaded (so the weights are the same
bytes on every machine with this torch) and takes well under a minute on one CPU thread; the
weights are cached as safetensors in the user cache directory
(``$XDG_CACHE_HOME/physgsa`` or ``~/.cache/physgsa``) and reused after.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...core.atomic import atomic_write

# torch, scikit-learn and safetensors are imported inside the functions that use them (start-up:
# `physgsa models`, and `physgsa spectra` of a file, load none of them).

__all__ = ["digits_resnet", "untrained_model", "digits_data", "digits_checkpoints", "cache_path", "held_out_accuracy",
           "cached_accuracy", "TRAIN_SEED"]

TRAIN_SEED = 0
_VERSION = "v2"  # v2: the test accuracy is kept in the file's metadata


def cache_path() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "physgsa" / f"digits-resnet-{_VERSION}.safetensors"


def untrained_model():
    """The digits ResNet, untrained: the architecture that :func:`digits_resnet` trains.

    Built in float32 whatever torch's default dtype (the data are float32, and the weights must
    be the same bytes on every machine): every layer is given ``dtype=torch.float32``.
    """
    import torch
    from torch import nn

    f32 = {"dtype": torch.float32}

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False, **f32)
            self.bn1 = nn.BatchNorm2d(cout, **f32)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False, **f32)
            self.bn2 = nn.BatchNorm2d(cout, **f32)
            self.relu = nn.ReLU()
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False, **f32),
                                                nn.BatchNorm2d(cout, **f32))

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + (x if self.downsample is None else self.downsample(x)))

    class DigitsResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, 3, 1, 1, bias=False, **f32)
            self.bn1 = nn.BatchNorm2d(16, **f32)
            self.relu = nn.ReLU()
            self.layer1 = nn.Sequential(Block(16, 16, 1))
            self.layer2 = nn.Sequential(Block(16, 32, 2))
            self.layer3 = nn.Sequential(Block(32, 64, 2))
            self.fc = nn.Linear(64, 10, **f32)

        def forward(self, x):
            x = self.relu(self.bn1(self.conv1(x)))
            x = self.layer3(self.layer2(self.layer1(x)))
            return self.fc(torch.flatten(x.mean(dim=(2, 3)), 1))

    return DigitsResNet()


def digits_data():
    """(x_train, y_train, x_test, y_test) as tensors: a seeded 80/20 split, pixels in [0, 1]."""
    import torch
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(d.target, dtype=torch.long)
    perm = np.random.default_rng(TRAIN_SEED).permutation(len(y))
    cut = int(0.8 * len(y))
    tr, te = torch.tensor(perm[:cut]), torch.tensor(perm[cut:])
    return x[tr], y[tr], x[te], y[te]


def _train(epochs: int = 30, on_epoch=None):
    """Train the digits ResNet; ``on_epoch(epoch, model)`` is called after each epoch (1-based)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(TRAIN_SEED)
        model = untrained_model()
        x, y, _, _ = digits_data()
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(TRAIN_SEED)
        model.train()
        for epoch in range(epochs):
            for idx in torch.randperm(len(y), generator=gen).split(64):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
            if on_epoch is not None:
                on_epoch(epoch + 1, model)
        return model.eval()
    finally:
        torch.set_num_threads(threads)


def cached_accuracy() -> tuple[int, int] | None:
    """(correct, total) recorded with the cached weights, or None when they are not trained yet."""
    from safetensors import safe_open

    path = cache_path()
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
        return int(meta["test_correct"]), int(meta["test_total"])
    except (OSError, ValueError, KeyError):
        return None


def held_out_accuracy(model) -> tuple[int, int]:
    """(correct, total) of ``model`` on the held-out 20% of the digits (the split of :func:`digits_data`)."""
    import torch

    _, _, x, y = digits_data()
    with torch.no_grad():
        pred = model.float()(x).argmax(dim=1)
    return int((pred == y).sum()), int(y.shape[0])


def digits_checkpoints(directory, *, epochs=(1, 3, 10, 30)) -> list:
    """Train the digits ResNet once and save the given epochs, each as a model folder
    (``epoch-NN/model.safetensors`` with its ``config.json``) that ``certify`` and ``compare`` read:
    a real training run, for trajectories (``physgsa compare epoch-01 epoch-03 ...``).
    """
    import json

    from safetensors.torch import save_file

    directory = Path(directory)
    wanted = set(int(e) for e in epochs)
    saved = []

    def keep(epoch, model):
        if epoch in wanted:
            folder = directory / f"epoch-{epoch:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
                      str(folder / "model.safetensors"))
            (folder / "config.json").write_text(json.dumps({"model_type": "torch-resnet"}) + "\n")
            saved.append(folder)

    model = _train(epochs=max(wanted), on_epoch=keep)
    model.eval()
    return saved


def digits_resnet(*, retrain: bool = False):
    """The trained digits ResNet (eval mode), from the cache or trained now and cached."""
    from safetensors.torch import load_file, save_file

    path = cache_path()
    model = untrained_model()
    if path.is_file() and not retrain:
        try:
            model.load_state_dict(load_file(str(path)))
            return model.eval()
        except (RuntimeError, OSError, ValueError):
            pass  # a stale or damaged cache entry: train again and replace it
    model = _train()
    correct, total = held_out_accuracy(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The accuracy is measured here, on the weights as trained on this machine, and kept with them.
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, str(tmp),
                                             metadata={"test_correct": str(correct), "test_total": str(total)}))
    return model
