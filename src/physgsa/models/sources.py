"""Where weights come from: one interface over files, state dicts and live modules.

A :class:`WeightSource` gives a model's config (a dict) and its weights by name, one tensor
at a time, as float64 numpy arrays. Adapters read only through it, so the same adapter serves
a ``.safetensors`` file (memory-mapped, never the whole model in memory), a ``.pt``/``.bin``
state dict (``torch.load`` with ``weights_only=True`` only), a local Hugging Face folder, a
model in the local Hugging Face cache, and an ``nn.Module`` passed in Python.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

from ..core.validation import PhysgsaError
from .files import SafetensorsFile, check_archive

__all__ = ["ModelSourceError", "WeightSource", "SafetensorsSource", "TensorDictSource", "folder_source", "path_source"]

_WEIGHT_FILES = ("model.safetensors", "diffusion_pytorch_model.safetensors", "pytorch_model.bin",
                 "diffusion_pytorch_model.bin")


class ModelSourceError(PhysgsaError):
    """A model source cannot be found, read, or trusted."""


def import_torch():
    try:
        import torch  # start-up: loaded only when needed, never at `physgsa --help`
    except ImportError:  # pragma: no cover - exercised only without the models extra
        raise ModelSourceError(
            "Reading models needs torch. Install the models extra: pip install 'physgsa[models]'."
        ) from None
    return torch


def _float64(arr, key: str, where: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype.kind not in "fiu":
        raise ModelSourceError(f"Weight {key!r} in {where} has dtype {arr.dtype}, which is not a real number type.")
    # One conversion, which is also the copy (the source keeps nothing, and a memory map or a
    # module's parameter is never aliased); float64 input is copied as is.
    return np.array(arr, dtype=np.float64) if arr.dtype == np.float64 else arr.astype(np.float64)


class WeightSource:
    """Named weights and a config; subclasses implement ``keys``, ``shape``, ``dtype``, ``_read``.

    ``deferrable``: the source is small to pickle and any process can read it again (a
    checkpoint file), so adapters may defer forming a factor until it is needed.
    """

    deferrable = False

    def __init__(self, name: str, config: dict | None):
        self.name = name
        self.config = dict(config or {})

    def keys(self) -> list[str]:
        raise NotImplementedError

    def shape(self, key: str) -> tuple[int, ...]:
        raise NotImplementedError

    def dtype(self, key: str) -> str:
        raise NotImplementedError

    def _read(self, key: str):
        raise NotImplementedError

    def has(self, key: str) -> bool:
        return key in self._keyset()

    def _keyset(self) -> set:
        if not hasattr(self, "_ks"):
            self._ks = set(self.keys())
        return self._ks

    def get(self, key: str) -> np.ndarray:
        """The weight ``key`` as a float64 array (a copy; the source keeps nothing)."""
        self.check(key)
        return _float64(self._read(key), key, self.name)

    def check(self, key: str) -> None:
        """Refuse a weight that is missing or quantized, from the header alone (before any read)."""
        if not self.has(key):
            raise ModelSourceError(f"{self.name} holds no weight named {key!r}.")
        code = self.dtype(key)
        if code.upper() in ("I8", "U8", "INT8", "UINT8", "TORCH.INT8", "TORCH.QINT8", "TORCH.QUINT8"):
            raise ModelSourceError(
                f"Weight {key!r} in {self.name} is quantized ({code}); physgsa needs real weights. "
                "Dequantize the checkpoint (weights times their scales) before analysing it."
            )


class SafetensorsSource(WeightSource):
    """One or more ``.safetensors`` files (a sharded checkpoint), read lazily."""

    deferrable = True

    def __init__(self, files: list[Path], config: dict | None, name: str):
        super().__init__(name, config)
        self._files = [SafetensorsFile(f) for f in files]
        self._where = {}
        for f in self._files:
            for k in f.keys():
                self._where.setdefault(k, f)

    def keys(self):
        return list(self._where)

    def shape(self, key):
        return self._where[key].shape(key)

    def dtype(self, key):
        return self._where[key].dtype(key)

    def _read(self, key):
        return self._where[key].read(key)


class TensorDictSource(WeightSource):
    """A dict of torch tensors: a loaded state dict, or a live module's ``state_dict()``."""

    def __init__(self, tensors: dict, config: dict | None, name: str):
        super().__init__(name, config)
        torch = import_torch()
        self._t = {}
        skipped = []
        for k, v in tensors.items():
            if isinstance(v, torch.Tensor):
                self._t[str(k)] = v
            else:
                skipped.append(str(k))
        self.non_tensors = skipped

    def keys(self):
        return list(self._t)

    def shape(self, key):
        return tuple(self._t[key].shape)

    def dtype(self, key):
        return str(self._t[key].dtype).replace("torch.", "")

    def _read(self, key):
        torch = import_torch()
        t = self._t[key].detach()
        if t.is_quantized:
            t = t.dequantize()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.to(torch.float32)
        # A view of the tensor's memory: get() converts it to float64 in one copy.
        return t.cpu().numpy()


def _module_config(module) -> dict:
    """A module's config as a dict; diffusers configs get their ``_class_name`` as in config.json."""
    cfg = getattr(module, "config", None)
    if cfg is None:
        return {}
    if hasattr(cfg, "to_dict"):
        out = cfg.to_dict()
    else:
        try:
            out = dict(cfg)
        except (TypeError, ValueError):
            return {}
    out.setdefault("_class_name", type(module).__name__)
    return out


def _read_config(folder: Path) -> dict | None:
    path = folder / "config.json"
    if not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelSourceError(f"'{path}' is not valid JSON ({exc}). Repair or remove it.") from None
    if not isinstance(cfg, dict):
        raise ModelSourceError(f"'{path}' must hold a JSON object; it holds {type(cfg).__name__}.")
    return cfg


def _load_state_dict(path: Path) -> dict:
    torch = import_torch()
    check_archive(path, f"Checkpoint '{path}'", error=ModelSourceError)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ModelSourceError(
            f"Refused to load '{path}': it holds pickled code or objects beyond plain tensors, and physgsa "
            f"loads checkpoints only with torch.load(weights_only=True), which never runs code from a file. "
            f"Convert it to .safetensors in an environment you trust."
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise ModelSourceError(
            f"'{path}' is not a readable PyTorch checkpoint ({type(exc).__name__}: {exc}).") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ModelSourceError(f"'{path}' holds a {type(obj).__name__}, not a state dict of named tensors.")
    return obj


def folder_source(folder: Path, name: str) -> WeightSource:
    cfg = _read_config(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (KeyError, json.JSONDecodeError, TypeError) as exc:
            raise ModelSourceError(f"'{index}' is not a valid sharded-checkpoint index ({exc}).") from None
        return SafetensorsSource([folder / s for s in shards], cfg, name)
    for fname in _WEIGHT_FILES:
        f = folder / fname
        if f.is_file():
            if f.suffix == ".safetensors":
                return SafetensorsSource([f], cfg, name)
            return TensorDictSource(_load_state_dict(f), cfg, name)
    raise ModelSourceError(
        f"Folder '{folder}' holds no weights physgsa knows ({', '.join(_WEIGHT_FILES)})."
    )


def _bundled_near(name: str) -> str | None:
    """The bundled model name closest to a mistyped ``name`` (none for an ``owner/name`` hub id)."""
    import difflib

    from .registry import BUNDLED_MODELS

    if "/" in name:
        return None
    close = difflib.get_close_matches(name.lower(), [*BUNDLED_MODELS, "example"], n=1, cutoff=0.75)
    return close[0] if close else None


def _hub_source(repo_id: str) -> WeightSource:
    # Never download: a hub call without network hangs for long. Only the local cache is read.
    try:
        from huggingface_hub import snapshot_download  # start-up: loaded only when needed, never at `physgsa --help`
    except ImportError:  # pragma: no cover
        raise ModelSourceError(
            f"'{repo_id}' is neither a file nor a folder, and huggingface_hub is not installed.") from None
    try:
        folder = snapshot_download(repo_id, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - every hub failure means the same thing here
        near = _bundled_near(repo_id)
        if near:
            # A mistyped bundled name ('minilmm') is far likelier than a hub id without an owner.
            raise ModelSourceError(
                f"'{repo_id}' is not a bundled model, a file or a folder here. Did you mean '{near}'? "
                "(physgsa models lists the bundled names.)"
            ) from None
        raise ModelSourceError(
            f"'{repo_id}' is not a file or folder here and not in the local Hugging Face cache; physgsa never "
            f"downloads. Download it first (hf download {repo_id}) or pass a local folder. "
            f"({type(exc).__name__})"
        ) from None
    return folder_source(Path(folder), repo_id)


def path_source(spec) -> WeightSource:
    """A :class:`WeightSource` for a path, a hub id in the local cache, or a module (bundled names:
    :func:`physgsa.models.resolve.resolve_source`).
    """
    if not isinstance(spec, (str, Path)):
        torch = import_torch()
        if isinstance(spec, torch.nn.Module):
            return TensorDictSource(spec.state_dict(), _module_config(spec), type(spec).__name__)
        raise ModelSourceError(
            "A model source must be a bundled name, a path, a Hugging Face id or an nn.Module; "
            f"got {type(spec).__name__}."
        )
    text = str(spec)
    path = Path(text)
    if path.is_dir():
        return folder_source(path, str(path))
    if path.is_file():
        cfg = _read_config(path.parent)
        if path.suffix == ".safetensors":
            return SafetensorsSource([path], cfg, str(path))
        if path.suffix in (".pt", ".pth", ".bin"):
            return TensorDictSource(_load_state_dict(path), cfg, str(path))
        raise ModelSourceError(
            f"'{path}' has suffix {path.suffix!r}; physgsa reads .safetensors, .pt, .pth and .bin models, and "
            ".npz or .safetensors chains of 2-D arrays.")
    if path.suffix in (".safetensors", ".pt", ".pth", ".bin", ".npz") or text.startswith((".", "/")):
        raise ModelSourceError(f"Model file '{path}' does not exist. Check the path.")
    return _hub_source(text)
