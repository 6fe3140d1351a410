"""Small networks trained at first use: ``digits-vit``, ``digits-diffusion`` and ``pysource-gpt``.

Each is a real trained network of one family the papers name, trained here on data every
machine has offline, so that certificates of trained weights need no download:

- ``digits-vit``: a ViT (transformers ``ViTForImageClassification``: 8 x 8 images, 2 x 2
  patches, 4 layers of width 64, 4 heads) trained on scikit-learn's digits; its quality is the
  held-out accuracy on the 20% test split of :func:`physgsa.models.bundled.digits.digits_data`.
- ``digits-diffusion``: a DDPM (diffusers ``UNet2DModel``: 8 x 8, one channel, blocks of 16 and
  32 channels, attention in the lower block and the mid block; ``DDPMScheduler`` with 1000
  linear steps) trained on the digits images scaled to [-1, 1]; its quality is the held-out
  denoising loss (MSE of the predicted noise on the test images, at a fixed seeded draw of
  timesteps and noises) against the untrained network's loss on the same draws.
- ``pysource-gpt``: a byte-level GPT-2 (transformers ``GPT2LMHeadModel``: 256 byte tokens,
  context 64, 4 layers of width 64, 4 heads) trained on the standard library's own source: the
  top-level ``.py`` files of ``sysconfig.get_paths()["stdlib"]`` in sorted order, the first
  1,000,000 bytes; the first 90% train, the last 10% are held out. Its quality is the held-out
  loss in nats per byte against the unigram baseline (the entropy of the training split's byte
  frequencies). The bytes differ between Python versions: the file names, the Python version
  and the corpus's SHA-256 are recorded with the weights.

Training is seeded and single-threaded (``torch.set_num_threads(1)``, restored after), so the
weights are the same bytes on every machine with the same libraries (and, for
``pysource-gpt``, the same standard library). The weights are cached as one ``.safetensors``
file each in ``$XDG_CACHE_HOME/physgsa`` (or ``~/.cache/physgsa``), with the model's config,
the training recipe, the library versions and the quality check in its metadata: the quality
is measured on the weights as trained and kept with them. A ``progress`` callable (one
argument: a line of text) hears a line when training starts, a few while it runs and one with
the quality when it is done.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...core.atomic import atomic_write
from ..sources import ModelSourceError, SafetensorsSource, TensorDictSource
from .digits import digits_data

# torch, transformers, diffusers and safetensors are imported inside the functions that use them
# (start-up: `physgsa models` and `physgsa --help` load none of them).

__all__ = ["TRAINED_MODELS", "cache_path", "ensure_trained", "train", "bundled_source", "model_info", "describe",
           "cached_record", "read_record", "load_model", "build_model", "export_folder", "random_source",
           "stdlib_corpus", "unigram_entropy", "quality_passed", "vit_accuracy", "denoising_loss", "heldout_loss",
           "THRESHOLDS", "TRAIN_SEED"]

TRAIN_SEED = 0
_VERSION = "v1"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class _Spec:
    family: str
    architecture: str
    data: str
    steps: int  # the full training budget, in optimizer steps
    seconds: str  # about how long the full training takes on one idle core (its CPU time), for the announcement
    summary: str


TRAINED_MODELS = {
    "digits-vit": _Spec(
        family="vision transformer", architecture="vit",
        data="scikit-learn's digits (1437 training, 360 held-out 8 x 8 images)",
        steps=30 * 23, seconds="about 20 s",
        summary="a small ViT (4 layers, width 64, 2 x 2 patches) trained on scikit-learn's digits at first use"),
    "digits-diffusion": _Spec(
        family="diffusion", architecture="unet",
        data="scikit-learn's digits images (1437 training, 360 held-out), scaled to [-1, 1]",
        steps=20 * 23, seconds="about 30 s",
        summary="a small DDPM (diffusers UNet2DModel, blocks of 16 and 32 channels) trained on scikit-learn's "
                "digits at first use"),
    "pysource-gpt": _Spec(
        family="language model", architecture="gpt2",
        data="the first 1,000,000 bytes of this Python's standard-library source (top-level .py files, sorted)",
        steps=800, seconds="about 80 s",
        summary="a byte-level GPT-2 (4 layers, width 64) trained on the Python standard library's source at "
                "first use"),
}


def _spec(name: str) -> _Spec:
    if name not in TRAINED_MODELS:
        raise ModelSourceError(f"{name!r} is not a model physgsa trains (known: {', '.join(TRAINED_MODELS)}).")
    return TRAINED_MODELS[name]


def cache_path(name: str, steps: int | None = None) -> Path:
    """Where the trained weights of ``name`` are cached (another file for a non-default ``steps``)."""
    spec = _spec(name)
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    budget = "" if steps is None or steps == spec.steps else f"-{int(steps)}steps"
    return Path(root) / "physgsa" / f"{name}-{_VERSION}{budget}.safetensors"


# -- models -------------------------------------------------------------------------------------

def _vit_config():
    from transformers import ViTConfig

    return ViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=64, num_hidden_layers=4,
                     num_attention_heads=4, intermediate_size=128, num_labels=10, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)


_UNET = dict(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(16, 32),
             down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
             norm_num_groups=8, attention_head_dim=8)
_TIMESTEPS = 1000


def _gpt_config():
    from transformers import GPT2Config

    return GPT2Config(vocab_size=256, n_positions=64, n_embd=64, n_layer=4, n_head=4, resid_pdrop=0.0,
                      embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)


def build_model(name: str, config: dict | None = None, seed: int = TRAIN_SEED):
    """The network of ``name`` with its initial weights drawn from ``seed`` (``seed=TRAIN_SEED``:
    the weights training starts from), from the default config or a saved one.
    """
    import torch

    _spec(name)
    # Built in float32 whatever torch's default dtype (the data are float32, and the weights must be
    # the same bytes everywhere); the caller's default is restored.
    default = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float32)
        return _build(name, config, seed)
    finally:
        torch.set_default_dtype(default)


def _build(name: str, config: dict | None, seed: int):
    import torch

    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.manual_seed(seed)
        if name == "digits-vit":
            from transformers import ViTConfig, ViTForImageClassification

            cfg = _vit_config() if config is None else ViTConfig.from_dict(_transformers_dict(config))
            return ViTForImageClassification(cfg)
        if name == "digits-diffusion":
            from diffusers import UNet2DModel

            if config is None:
                return UNet2DModel(**_UNET)
            return UNet2DModel.from_config({k: v for k, v in config.items() if not k.startswith("_")})
        from transformers import GPT2Config, GPT2LMHeadModel

        cfg = _gpt_config() if config is None else GPT2Config.from_dict(_transformers_dict(config))
        return GPT2LMHeadModel(cfg)


def _transformers_dict(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in ("transformers_version", "architectures")}


def _config_dict(model) -> dict:
    """The config as ``save_pretrained`` writes it to config.json (what the adapters read)."""
    cfg = model.config
    if hasattr(cfg, "to_dict"):
        return json.loads(json.dumps(cfg.to_dict(), default=list))
    out = json.loads(json.dumps(dict(cfg), default=list))
    out["_class_name"] = type(model).__name__
    return out


def _state(model) -> dict:
    """The tensors to store: the state dict without the GPT's tied output embedding."""
    sd = model.state_dict()
    tied = getattr(getattr(model, "config", None), "tie_word_embeddings", False)
    return {k: v.detach().clone().contiguous() for k, v in sd.items() if not (tied and k == "lm_head.weight")}


# -- data ---------------------------------------------------------------------------------------

_CORPUS_BYTES = 1_000_000
_CONTEXT = 64


def stdlib_corpus(n_bytes: int = _CORPUS_BYTES) -> tuple[bytes, dict]:
    """The first ``n_bytes`` of the standard library's top-level ``.py`` files in sorted order,
    and what they are (directory, Python version, the files used, SHA-256).
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if p.is_file()) if root.is_dir() else []
    parts, used, total = [], [], 0
    for f in files:
        if total >= n_bytes:
            break
        try:
            data = f.read_bytes()
        except OSError:
            continue
        parts.append(data)
        used.append(f.name)
        total += len(data)
    corpus = b"".join(parts)[:n_bytes]
    if len(corpus) < n_bytes // 4:
        raise ModelSourceError(
            f"pysource-gpt trains on the standard library's .py source, but '{root}' holds only {len(corpus)} bytes "
            "of it (this Python ships compiled files only). Use another Python installation.")
    info = {"stdlib": str(root), "python": platform.python_version(),
            "implementation": platform.python_implementation(), "files": used, "n_bytes": len(corpus),
            "sha256": hashlib.sha256(corpus).hexdigest()}
    return corpus, info


def _byte_split(corpus: bytes):
    import torch

    arr = torch.from_numpy(np.frombuffer(corpus, dtype=np.uint8).astype(np.int64))
    cut = int(0.9 * len(arr))
    return arr[:cut], arr[cut:]


def unigram_entropy(data) -> float:
    """Entropy in nats of the byte frequencies of ``data`` (bytes, or an integer array of byte values)."""
    values = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else np.asarray(data)
    counts = np.bincount(values.astype(np.int64), minlength=256).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


# -- training -----------------------------------------------------------------------------------

class _Announcer:
    """A few progress lines while a model trains (at 25%, 50% and 75% of its steps)."""

    def __init__(self, name: str, steps: int, progress: Progress | None):
        self.name, self.steps, self.progress = name, steps, progress
        self.marks = {max(1, (steps * k) // 4) for k in (1, 2, 3)} - {steps}
        self.start = time.monotonic()

    def step(self, done: int) -> None:
        if self.progress is not None and done in self.marks:
            self.progress(f"physgsa: training {self.name}: step {done}/{self.steps} "
                          f"({time.monotonic() - self.start:.0f} s)")


def _schedule(opt, lr: float, steps: int, warmup: float):
    import torch

    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 2), pct_start=warmup)


def _batches(n: int, size: int, gen):
    """Shuffled minibatch indices forever, one epoch after another."""
    import torch

    while True:
        yield from torch.randperm(n, generator=gen).split(size)


def _train_vit(model, steps: int, tick) -> dict:
    import torch


    x, y, _, _ = digits_data()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    sched = _schedule(opt, 2e-3, steps, 0.1)
    gen = torch.Generator().manual_seed(TRAIN_SEED)
    model.train()
    for done, idx in enumerate(_batches(len(y), 64, gen), start=1):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(pixel_values=x[idx]).logits, y[idx]).backward()
        opt.step()
        sched.step()
        tick(done)
        if done == steps:
            break
    model.eval()
    return {"optimizer": "AdamW", "lr": 2e-3, "weight_decay": 0.05, "schedule": "one-cycle, 10% warm-up",
            "batch": 64, "loss": "cross-entropy"}


def vit_accuracy(model) -> tuple[int, int]:
    """(correct, total) of the ViT on the held-out 20% of the digits."""
    import torch


    _, _, x, y = digits_data()
    with torch.no_grad():
        pred = model.float().eval()(pixel_values=x).logits.argmax(dim=1)
    return int((pred == y).sum()), int(y.shape[0])


def _scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=_TIMESTEPS)


def denoising_loss(model, draws: int = 4) -> float:
    """Mean squared error of the predicted noise on the held-out digits, at ``draws`` seeded
    (timestep, noise) pairs per image (the same pairs for every network).
    """
    import torch


    _, _, x, _ = digits_data()
    x = (x * 2 - 1).repeat(draws, 1, 1, 1)
    gen = torch.Generator().manual_seed(TRAIN_SEED + 1)
    t = torch.randint(0, _TIMESTEPS, (x.shape[0],), generator=gen)
    noise = torch.randn(x.shape, generator=gen)
    sched = _scheduler()
    model.eval()
    total = 0.0
    with torch.no_grad():
        for s in range(0, x.shape[0], 256):
            sl = slice(s, s + 256)
            pred = model(sched.add_noise(x[sl], noise[sl], t[sl]), t[sl]).sample
            total += float(torch.nn.functional.mse_loss(pred, noise[sl], reduction="sum"))
    return total / noise.numel()


def _train_diffusion(model, steps: int, tick) -> dict:
    import torch


    x, _, _, _ = digits_data()
    x = x * 2 - 1
    sched = _scheduler()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    lr_sched = _schedule(opt, 3e-3, steps, 0.1)
    gen = torch.Generator().manual_seed(TRAIN_SEED)
    model.train()
    for done, idx in enumerate(_batches(x.shape[0], 64, gen), start=1):
        xb = x[idx]
        noise = torch.randn(xb.shape, generator=gen)
        t = torch.randint(0, _TIMESTEPS, (xb.shape[0],), generator=gen)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(sched.add_noise(xb, noise, t), t).sample, noise).backward()
        opt.step()
        lr_sched.step()
        tick(done)
        if done == steps:
            break
    model.eval()
    return {"optimizer": "AdamW", "lr": 3e-3, "schedule": "one-cycle, 10% warm-up", "batch": 64,
            "loss": "MSE of the predicted noise (epsilon objective)", "scheduler": "DDPMScheduler",
            "num_train_timesteps": _TIMESTEPS, "beta_schedule": "linear"}


def heldout_loss(model, held) -> float:
    """Mean cross-entropy in nats per byte over the held-out bytes, in windows of the context length."""
    import torch

    n = (len(held) - 1) // _CONTEXT
    xs = held[:n * _CONTEXT].view(n, _CONTEXT)
    ys = held[1:n * _CONTEXT + 1].view(n, _CONTEXT)
    model.eval()
    total = 0.0
    with torch.no_grad():
        for s in range(0, n, 128):
            logits = model(input_ids=xs[s:s + 128]).logits
            total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                             ys[s:s + 128].reshape(-1), reduction="sum"))
    return total / (n * _CONTEXT)


def _train_gpt(model, steps: int, tick, train_bytes) -> dict:
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.01, betas=(0.9, 0.99))
    sched = _schedule(opt, 5e-3, steps, 0.05)
    gen = torch.Generator().manual_seed(TRAIN_SEED)
    offsets = torch.arange(_CONTEXT + 1)
    model.train()
    for done in range(1, steps + 1):
        start = torch.randint(0, len(train_bytes) - _CONTEXT - 1, (32,), generator=gen)
        xb = train_bytes[start[:, None] + offsets]
        opt.zero_grad()
        logits = model(input_ids=xb[:, :-1]).logits
        torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), xb[:, 1:].reshape(-1)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        tick(done)
    model.eval()
    return {"optimizer": "AdamW", "lr": 5e-3, "weight_decay": 0.01, "betas": [0.9, 0.99],
            "schedule": "one-cycle, 5% warm-up", "batch": 32, "context": _CONTEXT, "grad_clip": 1.0,
            "loss": "next-byte cross-entropy", "split": "first 90% train, last 10% held out"}


#: The quality each model must reach (its check).
THRESHOLDS = {"digits-vit": 0.9, "digits-diffusion": 0.7, "pysource-gpt": 0.8}


def quality_passed(name: str, quality: dict) -> bool:
    """Whether a recorded quality passes the model's check.

    ``digits-vit``: held-out accuracy above 90%. ``digits-diffusion``: held-out denoising loss
    below 0.7 times the untrained network's on the same draws. ``pysource-gpt``: held-out loss
    below 0.8 times the unigram baseline (nats per byte).
    """
    _spec(name)
    if name == "digits-vit":
        return quality["test_correct"] > THRESHOLDS[name] * quality["test_total"]
    if name == "digits-diffusion":
        return quality["heldout_mse"] < THRESHOLDS[name] * quality["untrained_mse"]
    return quality["heldout_nats_per_byte"] < THRESHOLDS[name] * quality["unigram_nats_per_byte"]


def _versions() -> dict:
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("transformers", "diffusers"):
        if mod in sys.modules:
            out[mod] = sys.modules[mod].__version__
    return out


def train(name: str, *, steps: int | None = None, progress: Progress | None = None):
    """Train ``name`` now (seeded, on one thread) and measure its quality.

    Parameters
    ----------
    name : str
        One of :data:`TRAINED_MODELS`.
    steps : int, optional
        Optimizer steps (default: the model's full budget). A smaller budget is for tests.
    progress : callable, optional
        Hears a line at 25%, 50% and 75% of the steps.

    Returns
    -------
    (model, record)
        The trained network (eval mode) and its record: ``quality`` (with ``passed``),
        ``recipe``, ``data``, ``config``, ``versions``, ``seconds`` (wall clock) and
        ``cpu_seconds`` (this process's CPU time: the cost on an idle core).
    """
    import torch

    spec = _spec(name)
    steps = spec.steps if steps is None else int(steps)
    if steps < 1:
        raise ValueError(f"steps must be at least 1; got {steps}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start, cpu = time.monotonic(), time.process_time()
    try:
        # The caller's random state is restored after; whatever draws from the global generator
        # while training draws the same numbers every time.
        with torch.random.fork_rng(devices=[]):
            model = build_model(name)
            torch.manual_seed(TRAIN_SEED)
            recipe, quality, data = _fit(name, model, steps, _Announcer(name, steps, progress).step)
    finally:
        torch.set_num_threads(threads)
    recipe.update({"seed": TRAIN_SEED, "steps": steps, "threads": 1})
    record = {"name": name, "quality": quality, "recipe": recipe, "data": data, "config": _config_dict(model),
              "versions": _versions(), "seconds": round(time.monotonic() - start, 1),
              "cpu_seconds": round(time.process_time() - cpu, 1)}
    return model, record


def _fit(name: str, model, steps: int, tick) -> tuple[dict, dict, dict]:
    """Train ``model`` in place; (recipe, quality with its verdict, data)."""
    data = {"description": TRAINED_MODELS[name].data}
    if name == "digits-vit":
        recipe = _train_vit(model, steps, tick)
        correct, total = vit_accuracy(model)
        quality = {"test_correct": correct, "test_total": total, "test_accuracy": correct / total}
    elif name == "digits-diffusion":
        untrained = denoising_loss(model)
        model.train()
        recipe = _train_diffusion(model, steps, tick)
        trained = denoising_loss(model)
        quality = {"heldout_mse": trained, "untrained_mse": untrained, "ratio": trained / untrained,
                   "draws": "4 seeded (timestep, noise) pairs per held-out image"}
    else:
        corpus, info = stdlib_corpus()
        data.update(info)
        train_bytes, held = _byte_split(corpus)
        recipe = _train_gpt(model, steps, tick, train_bytes)
        loss = heldout_loss(model, held)
        base = unigram_entropy(corpus[:len(train_bytes)])
        quality = {"heldout_nats_per_byte": loss, "unigram_nats_per_byte": base, "ratio": loss / base,
                   "heldout_bytes": len(held)}
    quality["passed"] = quality_passed(name, quality)
    return recipe, quality, data


def _write(path: Path, model, record: dict) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: json.dumps(v, sort_keys=True) for k, v in record.items()}
    state = _state(model)
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta))


def read_record(path) -> dict | None:
    """The record kept in a cached file's metadata (quality, recipe, data, config, ...), or None."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
        record = {k: json.loads(v) for k, v in meta.items()}
    except Exception:  # noqa: BLE001 - a damaged or foreign file (any reader error) is simply not a record
        return None
    need = ("name", "quality", "config", "recipe")
    return record if all(k in record for k in need) and isinstance(record["config"], dict) else None


def cached_record(name: str) -> dict | None:
    """The record of the cached weights of ``name``, or None when they are not trained here yet."""
    return read_record(cache_path(name))


def ensure_trained(name: str, *, progress: Progress | None = None, steps: int | None = None,
                   retrain: bool = False) -> Path:
    """The cache file of ``name``, trained now (and announced through ``progress``) if missing."""
    spec = _spec(name)
    path = cache_path(name, steps)
    if not retrain and read_record(path) is not None:
        return path
    if progress is not None:
        progress(f"physgsa: training {name} on {spec.data.split(' (')[0]} (first use only: {spec.seconds} on one "
                 f"idle thread, longer on a busy machine; then cached in {path})")
    model, record = train(name, steps=steps, progress=progress)
    _write(path, model, record)
    if progress is not None:
        progress(f"physgsa: {name} trained in {record['seconds']:.0f} s: {_quality_text(name, record['quality'])}")
    return path


def load_model(name: str, *, progress: Progress | None = None):
    """The trained network of ``name`` (eval mode), from the cache or trained now and cached."""
    from safetensors.torch import load_file

    path = ensure_trained(name, progress=progress)
    record = read_record(path)
    model = build_model(name, record["config"])
    missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise RuntimeError(f"{path} does not match {name}'s network (missing {missing}, unexpected {unexpected})")
    if "lm_head.weight" in missing:
        model.tie_weights()
    return model.eval()


def bundled_source(name: str, progress: Progress | None = None):
    """A :class:`~physgsa.models.sources.WeightSource` of the trained ``name`` (trained at first use).

    The cached ``.safetensors`` file, read lazily, with the config the network was built from:
    the adapters read it as they read a ``save_pretrained`` folder.
    """
    path = ensure_trained(name, progress=progress)
    record = read_record(path)
    if record is None:  # pragma: no cover - written just now or verified just before
        raise ModelSourceError(f"The cached weights of {name} in '{path}' cannot be read; remove the file.")
    return SafetensorsSource([path], record["config"], name)


def random_source(name: str, seed: int = TRAIN_SEED):
    """The same network with seeded initial weights (``seed=TRAIN_SEED``: where training started)."""
    model = build_model(name, seed=seed)
    return TensorDictSource(_state(model), _config_dict(model), f"{name} (random, seed {seed})")


def export_folder(name: str, folder, *, progress: Progress | None = None) -> Path:
    """Write the trained ``name`` as a Hugging Face folder (``save_pretrained``: config.json and weights)."""
    folder = Path(folder)
    load_model(name, progress=progress).save_pretrained(str(folder))
    return folder


def _quality_text(name: str, q: dict) -> str:
    verdict = "" if q.get("passed", True) else " (below its quality check)"
    if name == "digits-vit":
        return (f"test accuracy {q['test_correct']}/{q['test_total']} "
                f"({100 * q['test_correct'] / q['test_total']:.2f}%){verdict}")
    if name == "digits-diffusion":
        return (f"held-out denoising MSE {q['heldout_mse']:.4f} against {q['untrained_mse']:.4f} untrained "
                f"({q['ratio']:.3f}x){verdict}")
    return (f"held-out loss {q['heldout_nats_per_byte']:.3f} nats/byte against the unigram baseline "
            f"{q['unigram_nats_per_byte']:.3f} ({q['ratio']:.3f}x){verdict}")


def model_info(name: str) -> dict:
    """What ``physgsa models`` prints of ``name``: family, architecture, data, quality (None until trained)."""
    spec = _spec(name)
    record = cached_record(name)
    info = {"name": name, "family": spec.family, "architecture": spec.architecture, "data": spec.data,
            "summary": spec.summary, "cache": str(cache_path(name)), "trained": record is not None,
            "quality": None if record is None else record["quality"],
            "quality_text": "not trained here yet" if record is None else
            _quality_text(name, record["quality"]) + " as trained on this machine"}
    if record is not None and name == "pysource-gpt":
        data = record.get("data") or {}
        info["corpus"] = {k: data.get(k) for k in ("python", "n_bytes", "sha256")}
    return info


def describe(name: str) -> str:
    """One line for ``physgsa models``: the summary, the family, and the quality."""
    info = model_info(name)
    return f"{info['summary']}; family: {info['family']}; {info['quality_text']}"
