"""Shared pieces of the modern adapters: the transformers config class of a source (LLaMA family,
CLIP, the CNNs below), and the block algebra of MobileNetV2, EfficientNet, ConvNeXt and RegNet.

CNN conventions (docs/definitions.md, "Factors from real networks"; ours):

- A conv is its zero-frequency channel matrix (``_conv.conv_dc``); a grouped or depthwise conv
  (``groups > 1``, the count from the config) is the block-diagonal matrix of
  ``_conv.grouped_channel_matrix``. A pointwise ``nn.Linear`` (ConvNeXt's ``pwconv``) is its
  weight.
- BatchNorm (eval) is ``diag(gamma / sqrt(var + eps))``; a LayerNorm over the channels
  contributes its affine scale ``diag(gamma)`` (its normalization is data-dependent), as
  GroupNorm does in the UNet adapters. Shifts (BatchNorm's, biases) drop out of the linear map.
- Activations on the main path (ReLU, ReLU6, SiLU, GELU) are linearized as the identity.
- A squeeze-excitation gate ``x * sigmoid(W_e act(W_r mean(x) + b_r) + b_e)`` is
  ``diag(s_0)``, ``s_0 = sigmoid(W_e act(b_r) + b_e)``: the gate at zero input, which is the
  exact Jacobian of the SE module at ``x = 0`` (the term through ``mean(x)`` is multiplied by
  ``x``). Its own activation is evaluated, not linearized: it acts on the bias only.
- A residual block's full factor is ``S + R`` (``S = I`` or the projection shortcut), its branch
  ``R``. A block without a skip (the module says where) is ``R`` in both modes (``plain``).

Only ``--conv dc`` is offered here; ``--conv fft`` is refused (the grouped-conv Fourier
channel matrices and these architectures' TF-style paddings are not modelled yet).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.chain import Chain, Factor, check_matrix
from ..core.validation import InvalidParameterError
from ._conv import bn_scale, conv_dc, grouped_channel_matrix
from .sources import ModelSourceError, WeightSource

__all__ = ["Block", "Ops", "activation", "build_chain", "find_prefix", "hf_config", "positive", "refuse_fft"]


def hf_config(src: WeightSource, model_type: str | None = None):
    """The source's config as its transformers config class (transformers' registry, never remote code).

    Keys a config.json omits get the class's defaults, exactly as transformers builds the model.
    """
    import transformers  # start-up: loaded only when needed, never at `physgsa --help`

    mt = model_type or src.config.get("model_type")
    try:
        cls = transformers.CONFIG_MAPPING[mt]
    except KeyError:
        raise ModelSourceError(f"{src.name}: transformers has no config class for model_type {mt!r}.") from None
    raw = {k: v for k, v in src.config.items() if k not in ("_class_name", "auto_map")}
    try:
        return cls.from_dict(raw)
    except Exception as exc:  # noqa: BLE001 - a config from a file can fail in any way
        first = (str(exc).splitlines() or [""])[0][:300]
        raise ModelSourceError(f"The config of {src.name} is not a valid {cls.__name__} ({type(exc).__name__}: "
                               f"{first}).") from None


def positive(cfg, key: str, where: str, value=None) -> int:
    """``cfg.key`` (or ``value``), which must be a positive int."""
    val = getattr(cfg, key, None) if value is None else value
    if isinstance(val, bool) or not isinstance(val, int) or val <= 0:
        raise ModelSourceError(f"The config of {where} must give '{key}' (a positive int); got {val!r}.")
    return val


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _gelu(z):
    from scipy.special import erf  # start-up: loaded only when needed, never at `physgsa --help`

    return 0.5 * z * (1.0 + erf(z / np.sqrt(2.0)))


_ACTS = {
    "relu": lambda z: np.maximum(z, 0.0),
    "relu6": lambda z: np.clip(z, 0.0, 6.0),
    "silu": lambda z: z * _sigmoid(z),
    "swish": lambda z: z * _sigmoid(z),
    "gelu": _gelu,
    "sigmoid": _sigmoid,
}


def activation(name, where: str):
    """A numpy activation by its transformers name (the SE gates evaluate theirs on a bias)."""
    if not isinstance(name, str) or name not in _ACTS:
        raise ModelSourceError(f"{where}: activation {name!r} is not one physgsa evaluates "
                               f"({', '.join(_ACTS)}).")
    return _ACTS[name]


def refuse_fft(conv: str, arch: str) -> None:
    if conv != "dc":
        raise InvalidParameterError(
            f"--conv {conv} is not available for {arch} yet: its depthwise/grouped convolutions and paddings are "
            "modelled at zero frequency only. Use --conv dc (the default)."
        )


def find_prefix(src: WeightSource, tail: str, arch: str) -> str:
    """The prefix before ``tail`` in the checkpoint's keys (task heads nest the base model)."""
    for k in src.keys():
        if k.endswith(tail) and (len(k) == len(tail) or k[-len(tail) - 1] == "."):
            return k[: len(k) - len(tail)]
    raise ModelSourceError(f"{src.name} is missing {tail}, which a transformers {arch} holds.")


@dataclass
class Ops:
    """Reads the weights of one block and multiplies its channel matrices in execution order."""

    src: WeightSource
    where: str
    mat: np.ndarray | None = None
    keys: list = field(default_factory=list)
    col_groups: np.ndarray | None = None

    def _apply(self, step: np.ndarray, what: str) -> None:
        if self.mat is not None and step.shape[1] != self.mat.shape[0]:
            raise ModelSourceError(f"{what} of {self.src.name} takes {step.shape[1]} channels but the previous "
                                   f"layer of {self.where} gives {self.mat.shape[0]}. The config contradicts "
                                   "the weights.")
        self.mat = step if self.mat is None else step @ self.mat

    def conv(self, key: str, *, groups: int = 1, n_in: int | None = None, n_out: int | None = None) -> None:
        """A conv (4-D kernel) or a pointwise linear (2-D weight), ``groups`` from the config."""
        if not self.src.has(key):
            raise ModelSourceError(f"{self.src.name} is missing {key!r}, which its config's layout implies.")
        w = self.src.get(key)
        if w.ndim not in (2, 4):
            raise ModelSourceError(f"{key!r} of {self.src.name} has shape {w.shape}; a conv is 4-D, a linear 2-D.")
        blocks = conv_dc(w)
        if n_out is not None and blocks.shape[0] != n_out or n_in is not None and blocks.shape[1] * groups != n_in:
            raise ModelSourceError(
                f"{key!r} of {self.src.name} has shape {tuple(w.shape)}, but the config says {n_in} -> {n_out} "
                f"channels in {groups} group(s). The config contradicts the weights.")
        if groups > 1:
            if blocks.shape[0] % groups:
                raise ModelSourceError(f"{key!r} of {self.src.name}: {blocks.shape[0]} outputs do not split into "
                                       f"the config's {groups} groups.")
            step, cg = grouped_channel_matrix(blocks, groups)
            if self.mat is None:
                self.col_groups = cg  # the block's inputs are this conv's inputs: its groups are their units
        else:
            step = blocks
        self.keys.append(key)
        self._apply(step, repr(key))

    def scale(self, vec: np.ndarray, what: str) -> None:
        """A channel scale ``diag(vec)`` (a folded norm, a layer scale, a gate)."""
        vec = np.asarray(vec, dtype=np.float64).reshape(-1)
        if self.mat is not None and vec.shape[0] != self.mat.shape[0]:
            raise ModelSourceError(f"{what} of {self.src.name} has {vec.shape[0]} channels; {self.where} has "
                                   f"{self.mat.shape[0]} there. The config contradicts the weights.")
        self.mat = np.diag(vec) if self.mat is None else vec[:, None] * self.mat

    def bn(self, prefix: str, eps: float) -> None:
        self.scale(bn_scale(self.src, prefix, eps), repr(prefix + "running_var"))

    def weight(self, key: str) -> np.ndarray:
        if not self.src.has(key):
            raise ModelSourceError(f"{self.src.name} is missing {key!r}, which its config's layout implies.")
        self.keys.append(key)
        return self.src.get(key)

    def se(self, reduce: str, expand: str, act) -> np.ndarray:
        """``diag(s_0)``, ``s_0 = sigmoid(W_e act(b_r) + b_e)`` (module docstring); returns ``s_0``."""
        w_e = self.weight(expand + "weight")
        b_r = self.weight(reduce + "bias") if self.src.has(reduce + "bias") else None
        b_e = self.weight(expand + "bias") if self.src.has(expand + "bias") else None
        w_r = self.weight(reduce + "weight")
        n_red = w_r.shape[0]
        hidden = act(np.zeros(n_red) if b_r is None else b_r)
        z = conv_dc(w_e) @ hidden + (0.0 if b_e is None else b_e)
        s0 = _sigmoid(z)
        self.scale(s0, f"the squeeze-excitation gate {expand!r}")
        return s0


@dataclass
class Block:
    """One factor: its name, module, the branch ops, the shortcut (``"identity"``, ops, or ``None``)."""

    name: str
    module: str
    branch: Ops
    shortcut: object = "identity"
    extra: dict = field(default_factory=dict)


def _shortcut_matrix(blk: Block, src: WeightSource) -> np.ndarray | None:
    if blk.shortcut is None:
        return None
    if blk.shortcut == "identity":
        r = blk.branch.mat
        if r.shape[0] != r.shape[1]:
            raise ModelSourceError(f"Block {blk.module} of {src.name} has an identity skip but changes width "
                                   f"({r.shape[1]} -> {r.shape[0]}).")
        return np.eye(r.shape[0])
    return blk.shortcut.mat


def build_chain(src: WeightSource, blocks: list[Block], *, factor: str, dtype_key: str, skipped_reason) -> Chain:
    """The chain of ``blocks`` (full ``S + R`` or branch ``R``; ``R`` alone where there is no skip)."""
    factors, used = [], set()
    for blk in blocks:
        s = _shortcut_matrix(blk, src)
        r = blk.branch.mat
        kind = "plain" if s is None else factor
        mat = r if s is None or factor == "branch" else s + r
        keys = list(blk.branch.keys)
        if s is not None and blk.shortcut != "identity":
            keys += blk.shortcut.keys
        used.update(keys)
        prov = {"source": "static", "kind": kind, "module": blk.module, "keys": keys, "conv": "dc",
                "residual": s is not None, "dtype": src.dtype(dtype_key), **blk.extra}
        if s is not None and blk.shortcut != "identity":
            prov["projection_shortcut"] = True
        factors.append(Factor(name=blk.name, matrix=check_matrix(mat, blk.name, src.name), provenance=prov,
                              col_groups=blk.branch.col_groups))
    skipped = []
    for k in src.keys():
        if k.endswith("weight") and k not in used and len(src.shape(k)) in (2, 4):
            skipped.append({"module": k.rsplit(".", 1)[0], "reason": skipped_reason(k)})
    return Chain.from_factors(factors, source=src.name, skipped=skipped)
