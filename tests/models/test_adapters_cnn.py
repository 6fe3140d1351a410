"""CNN adapters: each block factor is the block's response to spatially constant inputs.

A block with its ReLUs linearized (replaced by the identity), in eval mode, maps a spatially
constant input ``x`` to an output that is constant away from the borders; its value at the
centre, minus the response to 0, is ``F x`` with ``F`` our channel-level factor (BatchNorm
folded). Running statistics are randomized first so the folding is really tested.
"""

import copy

import numpy as np
import pytest
import torch
import transformers
from torch import nn

import physgsa
from physgsa.models import load_chain
from physgsa.models._conv import conv_at_frequency
from physgsa.models.bundled.digits import untrained_model
from torch_helpers import randomize_bn

torch.manual_seed(0)


def linearized(block):
    blk = copy.deepcopy(block)
    for _, m in list(blk.named_modules()):
        for cname, child in list(m.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(m, cname, nn.Identity())
    if hasattr(blk, "relu"):
        blk.relu = nn.Identity()
    return blk.eval()


def constant_response(block, c_in, size=16):
    """The centre-pixel linear map of a block on spatially constant inputs (c_out x c_in)."""
    with torch.no_grad():
        zero = block(torch.zeros(1, c_in, size, size, dtype=torch.float64))
        cols = []
        for j in range(c_in):
            x = torch.zeros(1, c_in, size, size, dtype=torch.float64)
            x[0, j] = 1.0
            out = block(x) - zero
            h, w = out.shape[2] // 2, out.shape[3] // 2
            cols.append(out[0, :, h, w])
    return torch.stack(cols, dim=1).numpy()


def test_torch_resnet_blocks_match_constant_input_response():
    model = randomize_bn(untrained_model())
    chain = load_chain(model)
    blocks = [model.layer1[0], model.layer2[0], model.layer3[0]]
    assert [f.name for f in chain.factors] == ["blocks.0", "blocks.1", "blocks.2"]
    for f, blk in zip(chain.factors, blocks):
        ref = constant_response(linearized(blk), blk.conv1.in_channels)
        np.testing.assert_allclose(f.matrix, ref, atol=1e-10)
    assert {s["module"] for s in chain.skipped} == {"conv1", "fc"}
    branch = load_chain(model, factor="branch").factors[0].matrix
    np.testing.assert_allclose(chain.factors[0].matrix - np.eye(16), branch, atol=1e-12)


@pytest.mark.parametrize("layer_type", ["basic", "bottleneck"])
def test_transformers_resnet_blocks_match_constant_input_response(layer_type):
    cfg = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 2], layer_type=layer_type,
                                    downsample_in_bottleneck=False)
    model = randomize_bn(transformers.ResNetModel(cfg))
    chain = load_chain(model)
    layers = [lyr for st in model.encoder.stages for lyr in st.layers]
    assert len(chain.factors) == len(layers) == 3
    c_in = 8
    for f, lyr in zip(chain.factors, layers):
        ref = constant_response(linearized(lyr), c_in)
        np.testing.assert_allclose(f.matrix, ref, atol=1e-10)
        c_in = f.matrix.shape[0]
    assert chain.factors[0].shape[1] == 8 and any("stem" in s["reason"] for s in chain.skipped)


def test_fft_channel_matrices_give_the_circular_convolution_spectrum():
    rng = np.random.default_rng(0)
    c_out, c_in, n = 3, 2, 5
    w = rng.standard_normal((c_out, c_in, 3, 3))
    # The dense operator of circular convolution (cross-correlation, as torch) on an n x n torus.
    dense = np.zeros((c_out * n * n, c_in * n * n))
    for o in range(c_out):
        for i in range(c_in):
            for y in range(n):
                for x in range(n):
                    for h in range(3):
                        for k in range(3):
                            dense[o * n * n + y * n + x, i * n * n + ((y + h) % n) * n + (x + k) % n] += w[o, i, h, k]
    ref = np.sort(np.linalg.svd(dense, compute_uv=False))
    ours = np.sort(np.concatenate([np.linalg.svd(conv_at_frequency(w, u, v, n, padding=(0, 0)), compute_uv=False)
                                   for u in range(n) for v in range(n)]))
    np.testing.assert_allclose(ours, ref, atol=1e-10)
    # The real form doubles each singular value of the complex matrix.
    model = randomize_bn(untrained_model())
    fft = load_chain(model, conv="fft", freq=(1, 2, 8))
    assert fft.factors[0].shape == (32, 32)


def test_fft_channel_matrix_follows_numpys_dft_convention():
    """``fft2(y)[:, u, v] = Z fft2(x)[:, u, v]`` for a padded stride-1 conv on a torus (the _conv docstring)."""
    rng = np.random.default_rng(1)
    n = 6
    conv = nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular", bias=False).double()
    x = rng.standard_normal((2, n, n))
    with torch.no_grad():
        y = conv(torch.from_numpy(x)[None])[0].numpy()
    w = conv.weight.detach().numpy()
    fx, fy = np.fft.fft2(x), np.fft.fft2(y)
    for u in range(n):
        for v in range(n):
            z = conv_at_frequency(w, u, v, n, padding=(1, 1))
            np.testing.assert_allclose(fy[:, u, v], z @ fx[:, u, v], atol=1e-12)


def test_digits_resnet_is_trained_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    from physgsa.models.bundled import digits

    model = digits.digits_resnet()
    _, _, x, y = digits.digits_data()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc >= 0.97
    assert digits.cache_path().is_file() and str(tmp_path) in str(digits.cache_path())
    again = digits.digits_resnet()
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])
    chain = load_chain("digits-resnet")
    assert [f.shape for f in chain.factors] == [(16, 16), (32, 16), (64, 32)]
    assert {f.provenance["dtype"] for f in chain.factors} == {"float32"}  # the stored precision, recorded
    names = physgsa.spectra("digits-resnet").table["name"].tolist()
    assert "layer1.0.conv1.weight" in names and "layer2.0.downsample.0.weight" in names


def test_state_dict_file_gives_the_same_chain(tmp_path):
    model = randomize_bn(untrained_model()).float()
    torch.save(model.state_dict(), tmp_path / "r.pt")
    a = load_chain(model)
    b = load_chain(tmp_path / "r.pt")
    for fa, fb in zip(a.factors, b.factors):
        np.testing.assert_array_equal(fa.matrix, fb.matrix)


class AffineOnly(nn.Module):
    """GroupNorm's affine part alone (what the static factor keeps of it)."""

    def __init__(self, gn):
        super().__init__()
        self.weight, self.bias = gn.weight, gn.bias

    def forward(self, x):
        shape = (1, -1) + (1,) * (x.ndim - 2)  # channels on axis 1, for 3-D and 4-D inputs
        return x * self.weight.reshape(shape) + self.bias.reshape(shape)


def test_unet_factors_match_constant_input_response_and_breaks_are_named():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    model = diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                                  block_out_channels=(8, 16), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                  up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4).eval().double()
    for m in model.modules():  # non-trivial GroupNorm scales
        if isinstance(m, nn.GroupNorm):
            m.weight.data.uniform_(0.5, 1.5)
    chain = load_chain(model)
    assert {x.provenance["dtype"] for x in chain.factors} == {"float64"}  # the stored precision, recorded
    f = {x.name: x.matrix for x in chain.factors}

    def lin(mod):
        mod = copy.deepcopy(mod)
        for parent in mod.modules():
            for cname, child in list(parent.named_children()):
                if isinstance(child, nn.GroupNorm):
                    setattr(parent, cname, AffineOnly(child))
                elif isinstance(child, nn.SiLU):
                    setattr(parent, cname, nn.Identity())
        if hasattr(mod, "nonlinearity"):
            mod.nonlinearity = nn.Identity()
        return mod.eval()

    res = lin(model.down_blocks[1].resnets[0])
    temb = torch.zeros(1, 32, dtype=torch.float64)  # a time embedding only adds a constant offset
    np.testing.assert_allclose(f["down.1.resnets.0"], constant_response(lambda x: res(x, temb), 8), atol=1e-10)
    att = model.mid_block.attentions[0]
    np.testing.assert_allclose(f["mid.attentions.0"], constant_response(lin(att), 16), atol=1e-10)
    assert all("skip concatenation" in b.reason for b in chain.breaks) and len(chain.breaks) == 4
    assert any(s["module"] == "conv_in" for s in chain.skipped)
