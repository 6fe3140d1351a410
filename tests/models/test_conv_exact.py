"""CNN block factors against the real modules, on Fourier modes of a torus.

Reference: the JVP (``torch.func.jvp``) of a copy of the real block along the input mode
``x[c, i, j] = a_c exp(2 pi i (u i + v j) / n)`` (its real and imaginary parts, one real JVP
each), projected onto the output mode ``exp(2 pi i (u' i + v' j) / m)`` of the output grid
``m`` that the real module produces, with ``u' = u mod m``. Nothing here calls the adapters'
phase code; the output grid and the frequency on it come from the real tensors' shapes.

The copy differs from the real block in three ways, each exact for what the factor claims:

- every conv pads circularly, so the ``n x n`` grid is a torus and a stride-``s`` conv maps
  each Fourier mode to one Fourier mode (with zero padding the borders mix modes, and the
  factor is exact only away from them: see ``test_zero_frequency_factor_is_exact_on_a_torus_only``);
- each ReLU is replaced by the identity. The factor linearizes ReLUs as all-active, and where
  every pre-activation is positive the real block's JVP is exactly the JVP of this copy (ReLU's
  derivative is 1 there); the copy is affine, so its JVP is the same at every base point. The
  alternative, a base input with all pre-activations large and positive, cannot be built for
  random BatchNorm scales of both signs, and would test the same identity;
- (UNet) GroupNorm is replaced by its affine part and SiLU by the identity: GroupNorm's
  normalization depends on the input, and the adapter's documented model (architecture.md)
  keeps its affine scale only.
"""

import copy

import numpy as np
import pytest
import torch
import transformers
from torch import nn

from physgsa.core.validation import InvalidParameterError
from physgsa.models import load_chain, resolve_source
from physgsa.models.bundled.digits import untrained_model
from physgsa.models.sources import ModelSourceError, TensorDictSource
from physgsa.models.unet import unet_chain
from torch_helpers import one_thread, randomize_bn  # noqa: F401 - one_thread is an autouse fixture

F64 = torch.float64


class AffineOnly(nn.Module):
    """GroupNorm's affine part alone (what the static factor keeps of it)."""

    def __init__(self, gn):
        super().__init__()
        self.weight, self.bias = gn.weight, gn.bias

    def forward(self, x):
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return x * self.weight.reshape(shape) + self.bias.reshape(shape)


def torus_copy(module, circular=True):
    """The module with circular convs, identity activations and GroupNorm's affine part only."""
    m = copy.deepcopy(module).double().eval()
    for parent in list(m.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, (nn.ReLU, nn.SiLU)):
                setattr(parent, name, nn.Identity())
            elif isinstance(child, nn.GroupNorm):
                setattr(parent, name, AffineOnly(child))
            elif isinstance(child, nn.Conv2d) and circular and any(child.padding):
                child.padding_mode = "circular"
    return m


def real_form(z):
    return np.block([[z.real, -z.imag], [z.imag, z.real]])


def mode_map(f, c_in, n, u, v, *, pure=True, difference=False):
    """The complex c_out x c_in map of ``f`` from input mode (u, v) on n x n to its output mode.

    ``f`` is linear up to a constant, so any base point gives the same JVP (a random one is
    used). Attention is not, and torch has no forward AD for its fused kernel: with
    ``difference`` the map is ``f(x) - f(0)``, which for a spatially constant ``x`` (``u = v = 0``)
    is exact, since all tokens are then equal and the pattern is uniform whatever ``x`` is.
    The output mode is (u mod m, v mod m) on the m x m grid that ``f`` returns. With ``pure``
    the output must be that one mode and nothing else.
    """
    idx = torch.arange(n, dtype=F64)
    theta = 2 * np.pi * (u * idx[:, None] + v * idx[None, :]) / n
    eye = torch.eye(c_in, dtype=F64)[:, :, None, None]  # batch b = input channel b
    base = torch.randn(c_in, c_in, n, n, dtype=F64, generator=torch.Generator().manual_seed(3))
    if difference:
        assert u % n == 0 and v % n == 0, "f(x) - f(0) is exact for attention at zero frequency only"
        with torch.no_grad():
            zero = f(torch.zeros_like(base))
            ys = [f(eye * torch.cos(theta)) - zero, f(eye * torch.sin(theta)) - zero]
    else:
        ys = [torch.func.jvp(f, (base,), (eye * torch.cos(theta),))[1],
              torch.func.jvp(f, (base,), (eye * torch.sin(theta),))[1]]
    y = ys[0].detach().numpy() + 1j * ys[1].detach().numpy()  # (c_in, c_out, m, m)
    m = y.shape[-1]
    jdx = np.arange(m)
    wave = np.exp(2j * np.pi * ((u % m) * jdx[:, None] + (v % m) * jdx[None, :]) / m)
    coef = (y * wave.conj()).mean(axis=(-2, -1))
    if pure:
        resid = y - coef[..., None, None] * wave
        assert np.abs(resid).max() <= 1e-11 * max(1.0, np.abs(y).max()), "the output is not a single mode"
    return coef.T


def assert_close(ours, ref, what):
    err = np.abs(ours - ref).max()
    assert err <= 1e-12 * max(1.0, np.abs(ref).max()), f"{what}: max |ours - ref| = {err:.3g}"


# --- ResNets --------------------------------------------------------------------------------


class TVBottleneck(nn.Module):
    """torchvision's Bottleneck (v1.5: the stride on the 3x3 conv), with its parameter names."""

    def __init__(self, cin, width, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class TVBottleneckNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(TVBottleneck(8, 4, 16, 1))
        self.layer2 = nn.Sequential(TVBottleneck(16, 8, 32, 2), TVBottleneck(32, 8, 32, 1))
        self.fc = nn.Linear(32, 10)


def _hf(layer_type, **kw):
    sizes = [8, 16] if layer_type == "basic" else [16, 32]
    cfg = transformers.ResNetConfig(embedding_size=sizes[0], hidden_sizes=sizes, depths=[2, 1],
                                    layer_type=layer_type, **kw)
    torch.manual_seed(0)
    model = randomize_bn(transformers.ResNetModel(cfg))
    return model, [lyr for st in model.encoder.stages for lyr in st.layers], sizes[0]


def _resnet_cases():
    torch.manual_seed(0)
    digits = randomize_bn(untrained_model())
    torch.manual_seed(0)
    tvb = randomize_bn(TVBottleneckNet())
    return {
        "hf-basic": _hf("basic"),
        "hf-basic-first-stage-stride": _hf("basic", downsample_in_first_stage=True),
        "hf-bottleneck": _hf("bottleneck"),
        "hf-bottleneck-downsample-in-bottleneck": _hf("bottleneck", downsample_in_bottleneck=True),
        "torchvision-basic": (digits, [digits.layer1[0], digits.layer2[0], digits.layer3[0]], 16),
        "torchvision-bottleneck": (tvb, [tvb.layer1[0], tvb.layer2[0], tvb.layer2[1]], 8),
    }


RESNETS = _resnet_cases()
FREQS = [(1, 0, 8), (3, 5, 8), (4, 4, 8), (5, 2, 8), (7, 7, 8)]


@pytest.mark.parametrize("freq", FREQS, ids=lambda f: "{}-{}-{}".format(*f))
@pytest.mark.parametrize("case", list(RESNETS))
def test_resnet_fft_factor_is_the_block_on_a_fourier_mode(case, freq):
    model, blocks, c0 = RESNETS[case]
    u, v, n = freq
    chain = load_chain(model, conv="fft", freq=freq)
    branch = load_chain(model, conv="fft", freq=freq, factor="branch")
    assert len(chain.factors) == len(blocks)
    x, c_in = torch.zeros(1, c0, n, n, dtype=F64), c0
    strided = identity = 0
    for k, blk in enumerate(blocks):
        grid = x.shape[-1]  # the block's input grid, from the real forward pass
        ref = mode_map(torus_copy(blk), c_in, grid, u, v)
        assert_close(chain.factors[k].matrix, real_form(ref), f"{case} blocks.{k} at {freq}")
        shortcut = getattr(blk, "shortcut", None)
        if isinstance(shortcut, nn.Module):  # transformers: the shortcut alone, identity or projection
            ref_s = mode_map(torus_copy(shortcut), c_in, grid, u, v)
            assert_close(chain.factors[k].matrix - branch.factors[k].matrix, real_form(ref_s), f"{case} shortcut {k}")
            identity += isinstance(shortcut, nn.Identity)
        with torch.no_grad():
            x = blk(x)
        strided += x.shape[-1] < grid
        c_in = x.shape[1]
    assert strided >= 1 and (identity >= 1 or not case.startswith("hf"))


def test_aliasing_partners_are_separate_factors():
    """Input modes u and u + 4 of an 8 x 8 grid land on one output mode of a stride-2 block; each has its own factor."""
    model, blocks, _ = RESNETS["hf-basic"]
    blk = blocks[2]  # the stride-2 projection block: 8 x 8 in, 4 x 4 out
    a = load_chain(model, conv="fft", freq=(1, 0, 8)).factors[2].matrix
    b = load_chain(model, conv="fft", freq=(5, 0, 8)).factors[2].matrix
    assert np.abs(a - b).max() > 1e-3
    for u, mat in ((1, a), (5, b)):
        assert_close(mat, real_form(mode_map(torus_copy(blk), 8, 8, u, 0)), f"partner u={u}")


def test_fft_refuses_a_grid_the_strides_do_not_divide():
    model = randomize_bn(untrained_model())  # strides 2 and 2 after layer1: n must be a multiple of 4
    with pytest.raises(InvalidParameterError, match="--freq"):
        load_chain(model, conv="fft", freq=(1, 0, 6))


def test_fft_refuses_a_torch_resnet_whose_strides_are_unknown():
    """torchvision names, but layer2.0 keeps its grid and width (no downsample): the names do not give its stride."""
    torch.manual_seed(0)
    model = TVBottleneckNet()
    model.layer2 = nn.Sequential(TVBottleneck(16, 8, 16, 1))
    model = randomize_bn(model)
    with pytest.raises(ModelSourceError, match="layer2.0 does not follow torchvision's layout"):
        load_chain(model, conv="fft", freq=(1, 0, 8))
    assert len(load_chain(model).factors) == 2  # zero frequency does not depend on strides


def test_zero_frequency_fft_is_the_dc_factor_in_real_form():
    for case in ("hf-bottleneck", "torchvision-basic"):
        model = RESNETS[case][0]
        dc = load_chain(model)
        fft = load_chain(model, conv="fft", freq=(0, 0, 8))
        for fd, ff in zip(dc.factors, fft.factors):
            z = np.zeros_like(fd.matrix)
            np.testing.assert_allclose(ff.matrix, np.block([[fd.matrix, z], [z, fd.matrix]]), rtol=0, atol=1e-12)


def _spatial_mean_map(blk, c_in, n, circular):
    """Column c: the spatial mean of the block's JVP along e_c times ones (Jacobian mode's definition)."""
    f = torus_copy(blk, circular=circular)
    ones = torch.eye(c_in, dtype=F64)[:, :, None, None].expand(c_in, c_in, n, n).contiguous()
    _, y = torch.func.jvp(f, (torch.zeros_like(ones),), (ones,))
    return y.mean(dim=(-2, -1)).T.detach().numpy()


def test_zero_frequency_factor_is_exact_on_a_torus_only():
    """The dc factor is the spatial-mean JVP on a torus; zero padding moves the mean (digits size, 8 x 8)."""
    model, blocks, c0 = RESNETS["torchvision-basic"]
    chain = load_chain(model)
    x, c_in, rel_zero = torch.zeros(1, c0, 8, 8, dtype=F64), c0, []
    for f, blk in zip(chain.factors, blocks):
        grid = x.shape[-1]
        torus = _spatial_mean_map(blk, c_in, grid, circular=True)
        zero = _spatial_mean_map(blk, c_in, grid, circular=False)
        assert_close(f.matrix, torus, "dc on a torus")
        rel_zero.append(np.linalg.norm(f.matrix - zero) / np.linalg.norm(f.matrix))
        with torch.no_grad():
            x = blk(x)
        c_in = x.shape[1]
    assert min(rel_zero) > 1e-2  # the border effect is not rounding


# --- UNet -----------------------------------------------------------------------------------


def _unet(**kw):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    cfg = {"sample_size": 8, "in_channels": 3, "out_channels": 3, "layers_per_block": 1,
           "block_out_channels": (8, 16), "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
           "up_block_types": ("AttnUpBlock2D", "UpBlock2D"), "norm_num_groups": 4}
    model = diffusers.UNet2DModel(**{**cfg, **kw}).eval().double()
    for m in model.modules():  # non-trivial GroupNorm scales
        if isinstance(m, nn.GroupNorm):
            m.weight.data.uniform_(0.5, 1.5)
    return model


def _unet_grids(model, n):
    """Each named submodule's input channels and grid, from a real forward pass with hooks."""
    seen = {}

    def hook(name):
        def pre(mod, args, kwargs):
            x = args[0] if args else kwargs.get("hidden_states", kwargs.get("input_tensor"))
            seen.setdefault(name, (x.shape[1], x.shape[-1]))
        return pre

    handles = [m.register_forward_pre_hook(hook(name), with_kwargs=True) for name, m in model.named_modules()
               if name.count(".") in (2, 3) and ("resnets" in name or "samplers" in name or "attentions" in name)]
    with torch.no_grad():
        model(torch.zeros(1, model.config.in_channels, n, n, dtype=F64), 0)
    for h in handles:
        h.remove()
    return seen


#: chain name -> module path in UNet2DModel
UNET_MODULES = {"down.0.resnets.0": "down_blocks.0.resnets.0", "down.0.downsample": "down_blocks.0.downsamplers.0",
                "down.1.resnets.0": "down_blocks.1.resnets.0", "mid.resnets.0": "mid_block.resnets.0",
                "mid.resnets.1": "mid_block.resnets.1", "up.0.resnets.0": "up_blocks.0.resnets.0",
                "up.0.resnets.1": "up_blocks.0.resnets.1", "up.0.upsample": "up_blocks.0.upsamplers.0",
                "up.1.resnets.1": "up_blocks.1.resnets.1"}


@pytest.mark.parametrize("freq", [(1, 2, 8), (3, 3, 8), (6, 1, 8)], ids=lambda f: "{}-{}-{}".format(*f))
def test_unet_fft_factors_are_the_linear_model_on_a_fourier_mode(freq):
    model = _unet()
    u, v, n = freq
    chain = unet_chain(resolve_source(model), factor="full", conv="fft", freq=freq)
    f = {x.name: x.matrix for x in chain.factors}
    grids = _unet_grids(model, n)
    temb = torch.zeros(1, model.time_embedding.linear_2.out_features, dtype=F64)
    for name, path in UNET_MODULES.items():
        mod = torus_copy(model.get_submodule(path))
        c_in, grid = grids[path]
        fn = (lambda x, mod=mod: mod(x, temb)) if "resnets" in path else mod
        # Nearest upsampling sends one mode to four; the factor is the part on the tracked mode.
        ref = mode_map(fn, c_in, grid, u, v, pure="upsamplers" not in path)
        assert_close(f[name], real_form(ref), f"{name} at {freq}")
    # Attention's documented model is per pixel (W_O W_V G), the same at every frequency.
    dc = {x.name: x.matrix for x in unet_chain(resolve_source(model), factor="full").factors}
    a = dc["mid.attentions.0"]
    z = np.zeros_like(a)
    np.testing.assert_allclose(f["mid.attentions.0"], np.block([[a, z], [z, a]]), rtol=0, atol=0)


def test_unet_mid_block_scale_factor_divides_the_mid_factors():
    model = _unet(mid_block_scale_factor=2.0)
    chain = unet_chain(resolve_source(model), factor="full")
    f = {x.name: x for x in chain.factors}
    temb = torch.zeros(1, model.time_embedding.linear_2.out_features, dtype=F64)
    for name, path in (("mid.resnets.0", "mid_block.resnets.0"), ("mid.attentions.0", "mid_block.attentions.0"),
                       ("mid.resnets.1", "mid_block.resnets.1")):
        mod = torus_copy(model.get_submodule(path))
        fn = (lambda x, mod=mod: mod(x, temb)) if "resnets" in path else mod
        # zero frequency on the mid block's 4 x 4 grid
        ref = mode_map(fn, 16, 4, 0, 0, difference="attentions" in path).real
        assert_close(f[name].matrix, ref, name)
    # The same weights read as scale 1 give twice the factor (what physgsa returned before).
    src = resolve_source(model)
    one = unet_chain(TensorDictSource(model.state_dict(), {**src.config, "mid_block_scale_factor": 1.0}, "one"),
                     factor="full")
    g = {x.name: x.matrix for x in one.factors}
    np.testing.assert_allclose(f["mid.resnets.0"].matrix, g["mid.resnets.0"] / 2, rtol=1e-14)
    # Every factor's scale is the real module's own.
    for x in chain.factors:
        mod = model.get_submodule(x.provenance["module"])
        want = getattr(mod, "output_scale_factor", getattr(mod, "rescale_output_factor", 1.0))
        assert x.provenance["output_scale_factor"] == want, x.name
    branch = {x.name: x.matrix for x in unet_chain(resolve_source(model), factor="branch").factors}
    np.testing.assert_allclose(f["mid.resnets.0"].matrix - branch["mid.resnets.0"], np.eye(16) / 2, atol=1e-14)


@pytest.mark.parametrize("key,value", [("resnet_time_scale_shift", "scale_shift"),
                                       ("down_block_types", ["SkipDownBlock2D", "AttnDownBlock2D"]),
                                       ("downsample_type", "resnet"), ("upsample_type", "resnet"),
                                       ("mid_block_scale_factor", 0.0)])
def test_unet_refuses_what_it_cannot_honour(key, value):
    model = _unet(down_block_types=("AttnDownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D",
                                                                                          "AttnUpBlock2D"))
    src = resolve_source(model)
    bad = TensorDictSource(model.state_dict(), {**src.config, key: value}, "bad")
    with pytest.raises(ModelSourceError, match=key):
        unet_chain(bad, factor="full")


def test_unet_downsample_padding_zero_reads_offset_zero():
    """downsample_padding=0: diffusers pads one zero row and column at the far end; on the torus that row is row 0."""
    model = _unet(downsample_padding=0)
    chain = unet_chain(resolve_source(model), factor="full", conv="fft", freq=(3, 1, 8))
    f = {x.name: x.matrix for x in chain.factors}
    conv = copy.deepcopy(model.down_blocks[0].downsamplers[0].conv)
    ref = mode_map(lambda x: conv(torch.nn.functional.pad(x, (0, 1, 0, 1), mode="circular")), 8, 8, 3, 1)
    assert_close(f["down.0.downsample"], real_form(ref), "downsample with padding 0")


def test_unet_fft_refuses_grids_it_cannot_follow():
    model = _unet()
    with pytest.raises(InvalidParameterError, match="--freq"):
        unet_chain(resolve_source(model), factor="full", conv="fft", freq=(1, 0, 7))
    bad = TensorDictSource(model.state_dict(), {**resolve_source(model).config, "downsample_padding": 2}, "bad")
    with pytest.raises(ModelSourceError, match="downsample_padding"):
        unet_chain(bad, factor="full", conv="fft", freq=(1, 0, 8))
    assert unet_chain(bad, factor="full").factors  # zero frequency does not depend on the padding
