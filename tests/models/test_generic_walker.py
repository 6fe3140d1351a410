"""The generic walker: residual blocks found by running any nn.Module on a sample.

References, none of which calls the walker's own channel code:
- the chain exported by hand: every factor computed here with numpy from the module's weights
  (BatchNorm folded, the depthwise kernel as a diagonal, the grouped conv as a block diagonal
  built by loops, the squeeze-excitation gate evaluated in numpy at the sample), written to an
  .npz and read back with physgsa.read_chain;
- torch.nn.functional.conv2d on spatially constant inputs of a torus (circular padding), and
  JVPs (torch.func.jvp) of the real modules on Fourier modes of the torus;
- torch.autograd.functional.jvp (double-backward, not forward AD) of the real blocks along
  spatially uniform directions, for Jacobian mode.
"""

import copy
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import physgsa
from physgsa.core.validation import InvalidParameterError
from physgsa.models import load_chain
from physgsa.models._conv import FourierMode, conv_factor, input_groups
from physgsa.models.generic import layout_help, seeded_sample, walk_chain
from physgsa.models.sources import ModelSourceError
from torch_helpers import one_thread  # noqa: F401 - one_thread is an autouse fixture
from torch_helpers import randomize_bn as randomize

F64 = torch.float64


# ----- models, from torch.nn alone ------------------------------------------------------------


class SE(nn.Module):
    """Squeeze-excitation: x * sigmoid(fc2(silu(fc1(mean(x)))))."""

    def __init__(self, c, r):
        super().__init__()
        self.fc1, self.fc2, self.act = nn.Conv2d(c, r, 1), nn.Conv2d(r, c, 1), nn.SiLU()

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True)))))


class MBConv(nn.Module):
    """1x1 expand (optionally grouped) -> depthwise 3x3 -> SE -> 1x1 project, skip where shapes match."""

    def __init__(self, cin, cout, expand=4, stride=1, groups_expand=1, proj=False):
        super().__init__()
        mid = cin * expand
        self.expand = nn.Conv2d(cin, mid, 1, bias=False, groups=groups_expand)
        self.bn1 = nn.BatchNorm2d(mid)
        self.dw = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.se = SE(mid, max(2, cin // 4))
        self.project = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.act = nn.SiLU()
        self.skip = stride == 1 and (cin == cout or proj)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)) if proj else None

    def forward(self, x):
        h = self.act(self.bn1(self.expand(x)))
        h = self.act(self.bn2(self.dw(h)))
        h = self.bn3(self.project(self.se(h)))
        if self.skip:
            h = h + (x if self.shortcut is None else self.shortcut(x))
        return h


class EffNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.SiLU())
        self.blocks = nn.Sequential(
            MBConv(8, 8),                                 # residual, identity shortcut
            MBConv(8, 12, stride=2),                      # stride 2, no skip: a plain factor
            MBConv(12, 12),                               # residual
            MBConv(12, 16, groups_expand=4, proj=True),   # projection shortcut, grouped expand
            MBConv(16, 16),                               # residual
        )
        self.head = nn.Sequential(nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.SiLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


class GroupedBlock(nn.Module):
    """grouped 1x1 (groups 4) -> BN -> ReLU -> depthwise 3x3 (dilation 2) -> BN -> ReLU -> 1x1 -> BN, + x."""

    def __init__(self, c, groups=4):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(c, 2 * c, 1, groups=groups, bias=False), nn.BatchNorm2d(2 * c)
        self.c2, self.b2 = nn.Conv2d(2 * c, 2 * c, 3, 1, 2, dilation=2, groups=2 * c, bias=False), nn.BatchNorm2d(2 * c)
        self.c3, self.b3 = nn.Conv2d(2 * c, c, 1, bias=False), nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        h = self.relu(self.b1(self.c1(x)))
        h = self.relu(self.b2(self.c2(h)))
        return self.b3(self.c3(h)) + x


class Down(nn.Module):
    """TF-style padding (left 1, top 1) -> depthwise 3x3 stride 2, unpadded -> BN -> dense 1x1 -> BN (no skip)."""

    def __init__(self, cin, cout):
        super().__init__()
        self.dw, self.b1 = nn.Conv2d(cin, cin, 3, 2, 0, groups=cin, bias=False), nn.BatchNorm2d(cin)
        self.pw, self.b2 = nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.pad_mode = "constant"

    def forward(self, x):
        x = torch.nn.functional.pad(x, (1, 0, 1, 0), mode=self.pad_mode)
        return self.b2(self.pw(self.b1(self.dw(x))))


class GroupedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.b0, self.down, self.b1 = GroupedBlock(8), Down(8, 12), GroupedBlock(12)

    def forward(self, x):
        return self.b1(self.down(self.b0(x)))


def effnet():
    torch.manual_seed(0)
    return randomize(EffNet())


def sample(shape=(2, 3, 12, 12), seed=7):
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


def block_inputs(model, blocks, x):
    """What each module in ``blocks`` receives in a forward pass of ``model`` on ``x``."""
    seen = {}
    hooks = [b.register_forward_hook(lambda mod, a, o, i=i: seen.__setitem__(i, a[0].detach().clone()))
             for i, b in enumerate(blocks)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return [seen[i] for i in range(len(blocks))]


# ----- the chain exported by hand ----------------------------------------------------------------


def _np(t):
    return t.detach().double().numpy()


def _bn(m):
    return _np(m.weight) / np.sqrt(_np(m.running_var) + m.eps)


def _dense_1x1(conv):
    """A 1x1 conv's (out, in) matrix; a grouped one as a block diagonal, built entry by entry."""
    w = _np(conv.weight)[:, :, 0, 0]
    out, per = w.shape
    full = np.zeros((out, per * conv.groups))
    per_out = out // conv.groups
    for o in range(out):
        grp = o // per_out
        for j in range(per):
            full[o, grp * per + j] = w[o, j]
    return full


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _se_gate(se, h):
    """The gate at the input ``h`` of the SE module (N, C): numpy, per item."""
    s = _np(h).mean(axis=(2, 3))
    z1 = s @ _np(se.fc1.weight)[:, :, 0, 0].T + _np(se.fc1.bias)
    a = z1 * _sigmoid(z1)
    return _sigmoid(a @ _np(se.fc2.weight)[:, :, 0, 0].T + _np(se.fc2.bias))


def hand_factor(blk, se_input, factor="full"):
    """R = D3 P diag(g) D2 W_dw D1 E, averaged over items (g per item); full adds I or D_s W_s."""
    e = _dense_1x1(blk.expand)
    dw = np.diag(_np(blk.dw.weight).sum(axis=(1, 2, 3)))  # depthwise: a diagonal
    p = _np(blk.project.weight)[:, :, 0, 0]
    gates = _se_gate(blk.se, se_input)
    r = np.mean([np.diag(_bn(blk.bn3)) @ p @ np.diag(g) @ np.diag(_bn(blk.bn2)) @ dw @ np.diag(_bn(blk.bn1)) @ e
                 for g in gates], axis=0)
    if not blk.skip or factor == "branch":
        return r
    if blk.shortcut is None:
        return np.eye(r.shape[0]) + r
    return np.diag(_bn(blk.shortcut[1])) @ _dense_1x1(blk.shortcut[0]) + r


def assert_same_tables(ours, theirs):
    """Every verdict, count, label and flag equal; every float equal to rounding (the two chains'
    matrices agree to 1e-12, not bit for bit: the products are summed in different orders)."""
    assert list(ours.columns) == list(theirs.columns) and len(ours) == len(theirs)
    floats = [c for c in ours.columns if pd.api.types.is_float_dtype(ours[c])]
    pd.testing.assert_frame_equal(ours.drop(columns=floats), theirs.drop(columns=floats), check_exact=True)
    for c in floats:
        a, b = ours[c].to_numpy(dtype=float, na_value=np.nan), theirs[c].to_numpy(dtype=float, na_value=np.nan)
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=c)


def test_walked_efficientnet_like_cnn_certifies_as_the_chain_exported_by_hand(tmp_path):
    model, x = effnet(), sample()
    chain = load_chain(model, sample=x)
    se_inputs = block_inputs(model, [b.se for b in model.blocks], x)
    hand = {f"blocks.{k}": hand_factor(b, h) for k, (b, h) in enumerate(zip(model.blocks, se_inputs))}
    assert [f.name for f in chain.factors] == list(hand)
    kinds = [f.provenance["kind"] for f in chain.factors]
    assert kinds == ["full", "plain", "full", "full", "full"]
    assert [f.provenance.get("projection_shortcut") for f in chain.factors] == [False, None, False, True, False]
    for f in chain.factors:
        np.testing.assert_allclose(f.matrix, hand[f.name], rtol=0, atol=1e-12, err_msg=f.name)
        assert "frozen at the sample" in f.provenance["gates"]
        assert f.provenance["activations"] == "all-active (identity): SiLU"
    np.savez(tmp_path / "hand.npz", **hand)
    by_hand = physgsa.read_chain(tmp_path / "hand.npz")
    ours, theirs = physgsa.certify(chain, n_perturbations=4), physgsa.certify(by_hand, n_perturbations=4)
    assert_same_tables(ours.interfaces, theirs.interfaces)
    assert_same_tables(ours.rows, theirs.rows)
    for a, b in zip(ours.certificate["interfaces"], theirs.certificate["interfaces"]):
        assert a["structure"]["supports"] == b["structure"]["supports"]
    # Everything outside the chain is listed, with the reason; nothing with weights goes unlisted.
    reasons = {s["module"]: s["reason"] for s in chain.skipped}
    assert set(reasons) == {"stem.0", "stem.1", "head.0", "head.1", "head.5"} | {
        f"blocks.{k}.se.fc{i}" for k in range(5) for i in (1, 2)}
    assert "stem" in reasons["stem.0"] and "head" in reasons["head.5"]
    assert "gate of blocks.3" in reasons["blocks.3.se.fc1"]
    # branch: R alone; the projection shortcut is then skipped, with its reason
    branch = load_chain(model, sample=x, factor="branch")
    for k, (b, h) in enumerate(zip(model.blocks, se_inputs)):
        np.testing.assert_allclose(branch.factors[k].matrix, hand_factor(b, h, "branch"), rtol=0, atol=1e-12)
    assert "shortcut of blocks.3" in {s["module"]: s["reason"] for s in branch.skipped}["blocks.3.shortcut.0"]
    assert next(p.dtype for p in model.parameters()) == F64 and model.training is False  # the caller's module untouched


# ----- grouped and depthwise convolutions, exactly ------------------------------------------------


def _circular_conv(w, stride, pad, dilation, groups):
    def f(x):
        return torch.nn.functional.conv2d(torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="circular"),
                                          w, stride=stride, dilation=dilation, groups=groups)
    return f


def mode_map(f, x0, u, v):
    """The complex map of ``f`` at ``x0`` (1, C, n, n) from input mode (u, v) to its output mode (JVPs)."""
    c, n = x0.shape[1], x0.shape[-1]
    idx = torch.arange(n, dtype=F64)
    theta = 2 * np.pi * (u * idx[:, None] + v * idx[None, :]) / n
    parts = []
    for wave in (torch.cos(theta), torch.sin(theta)):
        cols = []
        for ch in range(c):
            t = torch.zeros_like(x0)
            t[0, ch] = wave
            cols.append(torch.func.jvp(f, (x0,), (t,))[1][0].detach().numpy())
        parts.append(np.stack(cols))
    y = parts[0] + 1j * parts[1]  # (c_in, c_out, m, m)
    m = y.shape[-1]
    jdx = np.arange(m)
    out = np.exp(2j * np.pi * ((u % m) * jdx[:, None] + (v % m) * jdx[None, :]) / m)
    coef = (y * out.conj()).mean(axis=(-2, -1))
    assert np.abs(y - coef[..., None, None] * out).max() <= 1e-11 * max(1.0, np.abs(y).max()), "not a single mode"
    return coef.T


def real_form(z):
    return np.block([[z.real, -z.imag], [z.imag, z.real]])


@pytest.mark.parametrize("groups, c_in, c_out, k, stride, dilation",
                         [(4, 8, 12, 3, 1, 1), (4, 8, 12, 3, 2, 2), (8, 8, 8, 3, 1, 1), (8, 8, 16, 5, 2, 1)],
                         ids=["grouped", "grouped-stride2-dilation2", "depthwise", "depthwise-multiplier2-stride2"])
def test_grouped_and_depthwise_channel_operators_on_a_torus(groups, c_in, c_out, k, stride, dilation):
    rng = np.random.default_rng(5)
    w = rng.standard_normal((c_out, c_in // groups, k, k))
    pad = dilation * (k - 1) // 2
    conv = _circular_conv(torch.from_numpy(w), stride, pad, dilation, groups)
    # zero frequency: the conv applied to spatially constant inputs e_c x 1 on the torus
    dc, _ = conv_factor(w, None, stride=stride, padding=(pad, pad), where="w", groups=groups, dilation=(dilation,) * 2)
    ones = torch.eye(c_in, dtype=F64)[:, :, None, None].expand(c_in, c_in, 8, 8)
    y = conv(ones.contiguous())
    assert torch.allclose(y, y[:, :, :1, :1].expand_as(y), rtol=0, atol=1e-13)  # constant in, constant out
    np.testing.assert_allclose(dc, y[:, :, 0, 0].numpy().T, rtol=0, atol=1e-13)
    per_out, per_in = c_out // groups, c_in // groups
    for o in range(c_out):  # block-diagonal (diagonal when depthwise)
        outside = [c for c in range(c_in) if c // per_in != o // per_out]
        assert np.all(dc[o, outside] == 0)
    assert input_groups(c_in, groups).tolist() == [c // per_in for c in range(c_in)]
    # nonzero frequencies: JVPs of the conv on a Fourier mode of the 8 x 8 torus
    x0 = torch.from_numpy(rng.standard_normal((1, c_in, 8, 8)))
    for u, v in ((1, 3), (2, 7), (5, 4)):
        z, out = conv_factor(w, FourierMode(u, v, 8, (u, v, 8)), stride=stride, padding=(pad, pad), where="w",
                             groups=groups, dilation=(dilation, dilation))
        ref = mode_map(conv, x0, u, v)
        assert np.abs(z - ref).max() <= 1e-12 * max(1.0, np.abs(ref).max()), (u, v)
        assert out.n == 8 // stride


def torus_copy(module, keep=()):
    """Circular padding everywhere; ReLU/SiLU modules outside ``keep`` (gates) replaced by the identity."""
    m = copy.deepcopy(module)
    kept = {id(x) for k in keep for x in dict(m.named_modules())[k].modules()}
    for parent in list(m.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, (nn.ReLU, nn.SiLU)) and id(child) not in kept:
                setattr(parent, name, nn.Identity())
            elif isinstance(child, nn.Conv2d) and any(child.padding):
                child.padding_mode = "circular"
    for mod in m.modules():
        if hasattr(mod, "pad_mode"):
            mod.pad_mode = "circular"
    return m


def test_walked_fft_factors_are_the_blocks_on_a_fourier_mode():
    torch.manual_seed(3)
    model = randomize(GroupedNet())
    x = sample((1, 8, 8, 8))
    torus = torus_copy(model)
    for freq in ((1, 3, 8), (4, 2, 8)):
        u, v, _ = freq
        chain = load_chain(model, sample=x, conv="fft", freq=freq)
        assert [f.name for f in chain.factors] == ["b0", "down", "b1"]
        assert [f.provenance["freq"] for f in chain.factors] == [[u, v, 8], [u, v, 8], [u % 4, v % 4, 4]]
        for f, blk, base in zip(chain.factors, [torus.b0, torus.down, torus.b1], block_inputs(torus, [
                torus.b0, torus.down, torus.b1], x)):
            ref = mode_map(blk, base, u, v)
            assert np.abs(f.matrix - real_form(ref)).max() <= 1e-12 * np.abs(ref).max(), (f.name, freq)
        assert chain.factors[0].col_groups.tolist() == np.concatenate([input_groups(8, 4)] * 2).tolist()


def test_frozen_gate_is_exact_on_fourier_modes_off_zero_frequency():
    """On a torus, with the residual path's activations all-active, the SE block's true JVP on a
    mode that is not zero frequency on the gate's grid is the static factor with the gate frozen at
    the base point: the gate reads a spatial mean, which such a mode does not move."""
    torch.manual_seed(4)
    model = nn.Sequential(MBConv(8, 8), MBConv(8, 8, groups_expand=4))
    model = torus_copy(randomize(model), keep=("0.se", "1.se"))
    x = sample((1, 8, 8, 8))
    chain = load_chain(model, sample=x, conv="fft", freq=(1, 3, 8))
    for f, blk, base in zip(chain.factors, model, block_inputs(model, list(model), x)):
        ref = mode_map(blk, base, 1, 3)
        assert np.abs(f.matrix - real_form(ref)).max() <= 1e-12 * np.abs(ref).max(), f.name
    # at zero frequency the true Jacobian also has the gate's own derivative: Jacobian mode has it, static does not
    static, jac = load_chain(model, sample=x), load_chain(model, sample=x, mode="jacobian")
    assert np.abs(static.factors[0].matrix - jac.factors[0].matrix).max() > 1e-6


# ----- Jacobian mode ------------------------------------------------------------------------------


def uniform_jacobian(block, x):
    """Column c: the spatial mean of the block's JVP along e_c x 1, by torch.autograd (double backward)."""
    cols = []
    for c in range(x.shape[1]):
        t = torch.zeros_like(x)
        t[:, c] = 1.0
        _, y = torch.autograd.functional.jvp(block, x, t)
        cols.append(y.mean(dim=(0, 2, 3)))
    return torch.stack(cols, dim=1).detach().numpy()


def test_jacobian_mode_is_the_real_blocks_derivative_along_uniform_directions():
    model, x = effnet(), sample()
    chain = load_chain(model, sample=x, mode="jacobian")
    inputs = block_inputs(model, list(model.blocks), x)
    for f, blk, xin in zip(chain.factors, model.blocks, inputs):
        ref = np.mean([uniform_jacobian(blk, xin[b:b + 1]) for b in range(xin.shape[0])], axis=0)
        err = np.abs(f.matrix - ref).max()
        assert err <= 1e-10 * np.abs(ref).max(), (f.name, err)
        assert f.provenance["source"] == "jacobian" and f.provenance["inputs"] == "the sample"
    # branch: the residual branch alone (the shortcut projection left out)
    branch = load_chain(model, sample=x, mode="jacobian", factor="branch")
    blk = model.blocks[3]
    proj = blk.shortcut
    ref = np.mean([uniform_jacobian(lambda y: blk(y) - proj(y), inputs[3][b:b + 1]) for b in range(2)], axis=0)
    np.testing.assert_allclose(branch.factors[3].matrix, ref, rtol=0, atol=1e-10 * np.abs(ref).max())


# ----- conv groups as column units ------------------------------------------------------------------


def test_units_groups_on_a_walked_chain_are_the_conv_groups():
    torch.manual_seed(5)
    model = randomize(nn.Sequential(GroupedBlock(8), GroupedBlock(8), GroupedBlock(8)))
    chain = load_chain(model, sample=sample((1, 8, 6, 6)))
    assert all(f.col_groups is not None and f.provenance["col_groups_from"].endswith(".c1") for f in chain.factors)
    res = physgsa.certify(chain, units="groups", n_perturbations=2)
    assert res.interfaces["n_units"].tolist() == [4, 4]
    # Without conv groups, each interface keeps single channels, flagged.
    plain = physgsa.Chain.from_factors([physgsa.Factor(f.name, f.matrix) for f in chain.factors])
    res = physgsa.certify(plain, units="groups", n_perturbations=2)
    assert res.interfaces["n_units"].tolist() == [8, 8]
    assert all("units_channels_no_conv_groups" in f for f in res.interfaces["flags"])


# ----- where the layout comes from ------------------------------------------------------------------


def test_a_state_dict_without_config_says_how_to_give_the_layout(tmp_path):
    from safetensors.torch import save_file

    torch.save(effnet().state_dict(), tmp_path / "weights.pt")
    save_file({k: v.contiguous() for k, v in effnet().state_dict().items()}, tmp_path / "weights.safetensors")
    for call in (lambda **kw: load_chain(tmp_path / "weights.pt", **kw),
                 lambda **kw: physgsa.chain_from(str(tmp_path / "weights.safetensors"), **kw),
                 lambda **kw: physgsa.chain_from(str(tmp_path / "weights.pt"), **kw),
                 lambda **kw: load_chain(tmp_path / "weights.pt", mode="jacobian", **kw),
                 lambda **kw: load_chain(effnet().state_dict(), **kw)):
        with pytest.raises(ModelSourceError) as py:
            call()
        with pytest.raises(ModelSourceError) as cli:
            call(caller="cli")
        for text in (str(py.value), str(cli.value)):
            assert "\n" not in text and "config.json" in text
        assert "sample=" in str(py.value) and "build=" in str(py.value) and "--build" not in str(py.value)
        assert "--build" in str(cli.value) and "--sample-shape" in str(cli.value) and "sample=" not in str(cli.value)
    assert "--sample-shape" in layout_help("w.pt", interface="cli")
    with pytest.raises(InvalidParameterError, match="interface"):
        layout_help("w.pt", interface="gui")


BUILD_FILE = '''
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.bn = nn.BatchNorm2d(c)
        self.pw = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return x + self.pw(torch.relu(self.bn(self.dw(x))))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.blocks = nn.Sequential(Block(6), Block(6))

    def forward(self, x):
        return self.blocks(self.stem(x)).mean((2, 3))


def make():
    torch.manual_seed(11)
    return Net()


def broken():
    raise RuntimeError("no weights here\\nsecond line")


def not_a_module():
    return 3
'''


def test_build_runs_the_named_function_and_walks_a_seeded_sample(tmp_path):
    path = tmp_path / "mynet.py"
    path.write_text(textwrap.dedent(BUILD_FILE))
    spec = f"{path}:make"
    chain = load_chain(build=spec, sample_shape="1,3,8,8", seed=5)
    assert [f.name for f in chain.factors] == ["blocks.0", "blocks.1"]
    prov = chain.factors[0].provenance
    assert prov["sample_shape"] == [1, 3, 8, 8] and prov["sample_seed"] == 5 and prov["build"] == spec
    assert "seed 5" in chain.source and "(1, 3, 8, 8)" in chain.source
    assert {s["module"] for s in chain.skipped} == {"stem"}
    # the same as walking the module the function returns, on the same seeded sample
    import importlib.util

    mod_spec = importlib.util.spec_from_file_location("mynet_for_test", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    again = load_chain(module.make(), sample=seeded_sample((1, 3, 8, 8), 5))
    for a, b in zip(chain.factors, again.factors):
        np.testing.assert_array_equal(a.matrix, b.matrix)
    # Jacobian factors depend on the sample (the ReLUs): the seed is the one recorded
    jac = load_chain(build=spec, sample_shape=(1, 3, 8, 8), seed=5, mode="jacobian")
    same = load_chain(module.make(), sample=seeded_sample((1, 3, 8, 8), 5), mode="jacobian")
    other_seed = load_chain(module.make(), sample=seeded_sample((1, 3, 8, 8), 6), mode="jacobian")
    np.testing.assert_array_equal(jac.factors[1].matrix, same.factors[1].matrix)
    assert np.abs(jac.factors[1].matrix - other_seed.factors[1].matrix).max() > 1e-3
    # a checkpoint's weights are loaded into the built module
    other = module.make()
    with torch.no_grad():
        for prm in other.parameters():
            prm.mul_(-2.0)
    torch.save(other.state_dict(), tmp_path / "w.pt")
    loaded = load_chain(tmp_path / "w.pt", build=spec, sample_shape=(1, 3, 8, 8))
    direct = load_chain(other, sample_shape=(1, 3, 8, 8))
    for a, b in zip(loaded.factors, direct.factors):
        np.testing.assert_allclose(a.matrix, b.matrix, rtol=0, atol=1e-6)  # float32 weights, float64 analysis
    # every failure is one line naming what failed
    for bad, cls, words in ((f"{tmp_path}/nope.py:make", ModelSourceError, "does not exist"),
                            (f"{path}:missing", ModelSourceError, "defines no 'missing'"),
                            (f"{path}:broken", ModelSourceError, "raised RuntimeError: no weights here"),
                            (f"{path}:not_a_module", ModelSourceError, "not a torch nn.Module"),
                            ("no colon here", InvalidParameterError, "FILE.py:FUNCTION")):
        with pytest.raises(cls) as err:
            load_chain(build=bad, sample_shape=(1, 3, 8, 8))
        assert words in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InvalidParameterError, match="needs sample_shape="):
        load_chain(build=spec)
    with pytest.raises(InvalidParameterError, match="--sample-shape"):
        load_chain(build=spec, caller="cli")


# ----- one-line refusals ----------------------------------------------------------------------------


class MaxPoolBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(3, 1, 1)

    def forward(self, x):
        return x + self.pool(self.conv(x))


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = x + self.a(x)
        return x + (y + self.b(y))


class Mutating(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        h = self.conv(x)
        h[:, :2] = 0.0  # the graph's edges do not show this write
        return h + x


@pytest.mark.parametrize("model, kw, cls, words", [
    (MaxPoolBlock(), {}, ModelSourceError, "module pool in factor"),
    (MaxPoolBlock(), {"mode": "jacobian", "conv": "fft"}, InvalidParameterError, "conv"),
    (Nested(), {}, ModelSourceError, "nested or parallel"),
    (Mutating(), {}, ModelSourceError, "in place"),
    (nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU()), {}, ModelSourceError, "no residual block"),
    (MaxPoolBlock(), {"sample": torch.zeros(1, 4, 6, 6, dtype=torch.complex128)}, InvalidParameterError,
     "'sample' parameter"),  # issue 24: any rank is a sample now (test_generic_any_sample.py); complex is not
    (MaxPoolBlock(), {"sample_shape": (1, 4, 0, 8)}, InvalidParameterError, "'sample_shape' parameter"),
    (MaxPoolBlock(), {"interfaces": "heads"}, InvalidParameterError, "interfaces"),
    ("minilm", {}, ModelSourceError, "need the nn.Module itself"),
], ids=["maxpool", "jacobian-fft", "nested", "mutation", "no-residual", "sample-complex", "shape-zero", "heads",
        "not-a-module"])
def test_refusals_are_one_line_and_name_the_cause(model, kw, cls, words):
    kw = {"sample": torch.randn(1, 4, 6, 6), **kw}
    if "sample_shape" in kw:
        kw.pop("sample")
    with pytest.raises(cls) as err:
        load_chain(model, **kw)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_the_layer_walker_reads_grouped_and_depthwise_convs():
    """The issue: walk_chain refused groups > 1. Each conv is now its block-diagonal channel matrix."""
    torch.manual_seed(6)
    model = randomize(GroupedNet())
    chain = walk_chain(model, sample=sample((1, 8, 8, 8)))
    by_name = {f.name: f for f in chain.factors}
    dw = by_name["down.dw"]
    np.testing.assert_array_equal(dw.matrix, np.diag(_np(model.down.dw.weight).sum(axis=(1, 2, 3))))
    assert dw.col_groups.tolist() == list(range(8))
    np.testing.assert_array_equal(by_name["b0.c1"].matrix, _dense_1x1(model.b0.c1))
    assert by_name["b0.c1"].col_groups.tolist() == input_groups(8, 4).tolist()
