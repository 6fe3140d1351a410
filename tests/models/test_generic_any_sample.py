"""Issue 24 item 4: the generic walker takes any sample input.

A tensor of any rank, integer token ids, a tuple (positional) or dict (keyword) of tensors, and
``--sample FILE.npy|.npz|.pt`` on the command line; residual blocks over the last axis (MLP,
transformer and mixture-of-experts blocks: channels are the last axis there). Every factor is
checked against an independent computation: the weights multiplied by hand (static, all-active)
or ``torch.func.jacrev`` of the block written out by hand (Jacobian mode).
"""

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from physgsa import load_chain  # noqa: E402
from physgsa.core.validation import InvalidParameterError  # noqa: E402
from physgsa.models.sources import ModelSourceError  # noqa: E402

D = 6


def _np(t):
    return t.detach().to(torch.float64).numpy()


class MLPBlock(nn.Module):
    def __init__(self, d=D, h=8, act=None):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, h), nn.Linear(h, d)
        self.act = act if act is not None else nn.ReLU()

    def forward(self, x):
        return x + self.fc2(self.act(self.fc1(x)))


def res_mlp(n=2, act=None):
    torch.manual_seed(3)
    return nn.Sequential(*[MLPBlock(act=act) for _ in range(n)])


def by_hand(model):
    """I + W2 W1 for each linear residual block (ReLU all-active)."""
    return [np.eye(D) + _np(b.fc2.weight) @ _np(b.fc1.weight) for b in model]


def block_jacobian(f, x):
    """(1/T) sum_{t,s} J[t, s] averaged over items, by jacrev: an independent reference."""
    x = x.detach().to(torch.float64)
    if x.ndim == 2:
        x = x[:, None, :]
    mats = []
    for item in x:
        t = item.shape[0]
        jac = torch.func.jacrev(lambda z: f(z[None])[0])(item)  # (T, d, T, d)
        mats.append(_np(jac.sum(dim=(0, 2)) / t))
    return np.mean(mats, axis=0)


@pytest.mark.parametrize("shape", [(4, D), (3, 5, D)], ids=["vectors", "sequences"])
def test_residual_mlp_on_a_tensor_of_any_rank_static(shape):
    """The issue: load_chain(module, sample=torch.randn(4, 10)) was refused ("a 4-D float tensor of images")."""
    model = res_mlp()
    chain = load_chain(model, sample=torch.randn(*shape))
    assert [f.name for f in chain.factors] == ["0", "1"]
    for f, ref in zip(chain.factors, by_hand(model)):
        np.testing.assert_allclose(f.matrix, ref, rtol=0, atol=1e-13)
        assert f.provenance["kind"] == "full"
    branch = load_chain(model, sample=torch.randn(*shape), factor="branch")
    for f, ref in zip(branch.factors, by_hand(model)):
        np.testing.assert_allclose(f.matrix, ref - np.eye(D), rtol=0, atol=1e-13)


@pytest.mark.parametrize("shape", [(4, D), (2, 5, D)], ids=["vectors", "sequences"])
def test_residual_mlp_jacobian_matches_autograd(shape):
    model = res_mlp(act=nn.Tanh()).double()
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    chain = load_chain(model, sample=x, mode="jacobian")
    h = x
    for f, blk in zip(chain.factors, model):
        np.testing.assert_allclose(f.matrix, block_jacobian(blk, h), rtol=0, atol=1e-13)
        h = blk(h)


class TokenModel(nn.Module):
    def __init__(self, vocab=11):
        super().__init__()
        self.emb = nn.Embedding(vocab, D)
        self.blocks = nn.Sequential(MLPBlock(), MLPBlock())
        self.head = nn.Linear(D, vocab)

    def forward(self, ids):
        return self.head(self.blocks(self.emb(ids)))


def test_integer_token_ids():
    torch.manual_seed(4)
    model = TokenModel()
    ids = torch.randint(0, 11, (2, 5))
    chain = load_chain(model, sample=ids)
    assert [f.name for f in chain.factors] == ["blocks.0", "blocks.1"]
    for f, ref in zip(chain.factors, by_hand(model.blocks)):
        np.testing.assert_allclose(f.matrix, ref, rtol=0, atol=1e-13)
    skipped = {s["module"]: s["reason"] for s in chain.skipped}
    assert "stem" in skipped["emb"] and "head" in skipped["head"]
    jac = load_chain(model, sample=ids, mode="jacobian")
    h = model.double().emb(ids)
    for f, blk in zip(jac.factors, model.blocks):
        np.testing.assert_allclose(f.matrix, block_jacobian(blk, h), rtol=0, atol=1e-13)
        h = blk(h)


class TwoInputs(nn.Module):
    """forward(x, shift): the first input is walked; the others are held at their values."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(MLPBlock(), MLPBlock())

    def forward(self, x, shift):
        return self.blocks(x + shift)


def test_tuple_and_dict_samples():
    torch.manual_seed(5)
    model = TwoInputs()
    x, shift = torch.randn(3, D), torch.randn(3, D)
    ref = by_hand(model.blocks)
    for sample in [(x, shift), {"x": x, "shift": shift}, {"shift": shift, "x": x}]:
        chain = load_chain(model, sample=sample)
        assert len(chain.factors) == 2
        for f, r in zip(chain.factors, ref):
            np.testing.assert_allclose(f.matrix, r, rtol=0, atol=1e-13)


class MoE(nn.Module):
    """x + sum_e softmax(router(x))_e * expert_e(x): the experts are parallel maps of one block."""

    def __init__(self, n=3, gated=True):
        super().__init__()
        self.router = nn.Linear(D, n)
        self.experts = nn.ModuleList([nn.Sequential(nn.Linear(D, 5), nn.Tanh() if gated else nn.ReLU(),
                                                    nn.Linear(5, D)) for _ in range(n)])
        self.gated = gated
        self.c = [0.5, -1.0, 2.0][:n]

    def forward(self, x):
        if self.gated:
            w = torch.softmax(self.router(x), dim=-1)
            return x + sum(w[..., e:e + 1] * ex(x) for e, ex in enumerate(self.experts))
        return x + sum(c * ex(x) for c, ex in zip(self.c, self.experts))


def test_mixture_of_experts_static_names_the_parallel_experts():
    torch.manual_seed(6)
    model = nn.Sequential(MoE(gated=False), MLPBlock())
    chain = load_chain(model, sample=torch.randn(2, 4, D))
    moe = model[0]
    ref = np.eye(D) + sum(c * _np(ex[2].weight) @ _np(ex[0].weight) for c, ex in zip(moe.c, moe.experts))
    np.testing.assert_allclose(chain.factors[0].matrix, ref, rtol=0, atol=1e-13)
    assert len(chain.factors) == 2  # never chained: the experts are one factor
    assert chain.factors[0].provenance["parallel"] == ["0.experts.0", "0.experts.1", "0.experts.2"]


def test_mixture_of_experts_jacobian_matches_autograd():
    torch.manual_seed(7)
    model = nn.Sequential(MoE(), MLPBlock(act=nn.GELU())).double()
    x = torch.randn(2, 4, D, dtype=torch.float64)
    chain = load_chain(model, sample=x, mode="jacobian")
    assert len(chain.factors) == 2
    np.testing.assert_allclose(chain.factors[0].matrix, block_jacobian(model[0], x), rtol=0, atol=1e-13)
    np.testing.assert_allclose(chain.factors[1].matrix, block_jacobian(model[1], model[0](x)), rtol=0, atol=1e-13)
    assert chain.factors[0].provenance["parallel"] == ["0.experts.0", "0.experts.1", "0.experts.2"]
    # static mode refuses the softmax gate with the operation named, and says to use Jacobian mode
    with pytest.raises(ModelSourceError, match="jacobian"):
        load_chain(model, sample=x)


class Attention(nn.Module):
    """One-head causal self-attention with a pre-LayerNorm, written out in plain torch."""

    def __init__(self):
        super().__init__()
        self.ln = nn.LayerNorm(D)
        self.q, self.k, self.v, self.o = (nn.Linear(D, D) for _ in range(4))
        self.register_buffer("causal", torch.triu(torch.ones(16, 16, dtype=torch.bool), 1))

    def forward(self, x):
        h = self.ln(x)
        t = x.shape[1]
        s = self.q(h) @ self.k(h).transpose(1, 2) / D ** 0.5
        s = s.masked_fill(self.causal[:t, :t], float("-inf"))
        return x + self.o(torch.softmax(s, dim=-1) @ self.v(h))


def test_transformer_blocks_jacobian_matches_autograd():
    torch.manual_seed(8)
    model = nn.Sequential(Attention(), MLPBlock(act=nn.GELU()), Attention()).double()
    x = torch.randn(2, 5, D, dtype=torch.float64)
    chain = load_chain(model, sample=x, mode="jacobian")
    assert [f.name for f in chain.factors] == ["0", "1", "2"]
    h = x
    for f, blk in zip(chain.factors, model):
        np.testing.assert_allclose(f.matrix, block_jacobian(blk, h), rtol=0, atol=1e-13)
        h = blk(h)


def test_tiny_gpt2_from_config_jacobian():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=2, n_embd=8, n_head=2, vocab_size=13, n_positions=16)
    torch.manual_seed(9)
    model = transformers.GPT2Model(cfg).eval()
    ids = torch.randint(0, 13, (2, 5))
    chain = load_chain(model, sample=ids, mode="jacobian")
    assert len(chain.factors) == 4  # attention and MLP of each of the two layers
    ref = _adapter_reference(model, ids)
    assert max(np.abs(f.matrix - r).max() for f, r in zip(chain.factors, ref)) < 1e-14


def test_tiny_bert_from_config_dict_sample_jacobian():
    """A dict sample (keyword arguments) on a post-LayerNorm BERT: each residual block, then its
    LayerNorm as a plain factor; static mode refuses attention with the operation named."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(hidden_size=8, intermediate_size=12, num_hidden_layers=2, num_attention_heads=2,
                                  vocab_size=13, max_position_embeddings=32)
    torch.manual_seed(11)
    model = transformers.BertModel(cfg, add_pooling_layer=False).eval()
    ids = torch.randint(0, 13, (2, 5))
    sample = {"input_ids": ids, "attention_mask": torch.ones(2, 5, dtype=torch.long)}
    chain = load_chain(model, sample=sample, mode="jacobian")
    kinds = [f.provenance["kind"] for f in chain.factors]
    assert kinds == ["full", "plain", "full", "plain", "full", "plain", "full"]
    assert chain.factors[1].name == "encoder.layer.0.attention.output.LayerNorm"
    again = load_chain(model, sample=sample, mode="jacobian")
    for f, g in zip(chain.factors, again.factors):
        assert f.matrix.tobytes() == g.matrix.tobytes()
    with pytest.raises(ModelSourceError, match="mode='jacobian'"):
        load_chain(model, sample=sample)


def _adapter_reference(model, ids):
    """The transformer adapters' exact Jacobian machinery (issue 24 item 13: 9e-16 against autograd), per item."""
    import copy

    from physgsa.models.jacobian import token_jacobian, transformer_sublayers
    from physgsa.models.precision import float64_buffers

    ref = copy.deepcopy(model).double()
    float64_buffers(ref)
    ref.set_attn_implementation("eager")
    acc = None
    for b in range(ids.shape[0]):
        enc = {"input_ids": ids[b:b + 1], "attention_mask": torch.ones(1, ids.shape[1], dtype=torch.long)}
        x, subs = transformer_sublayers(ref, enc, factor="full")
        mats = []
        with torch.enable_grad():
            for sub in subs:
                mats.append(token_jacobian(sub.f, x, tokens="uniform", local=sub.local).matrix)
                with torch.no_grad():
                    x = sub.full(x)
        acc = mats if acc is None else [a + m for a, m in zip(acc, mats)]
    return [a / ids.shape[0] for a in acc]


def test_tiny_llama_jacobian_equals_the_adapter_with_float64_buffers(monkeypatch):
    """The walker's float64 copy rebuilds rotary inv_freq in float64 (models/precision.float64_buffers)
    and keeps RMSNorm's float32 casts in float64, as the LLaMA adapter does: equal to 1e-14."""
    transformers = pytest.importorskip("transformers")
    from physgsa.models.generic import walk

    cfg = transformers.LlamaConfig(hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
                                   num_key_value_heads=1, vocab_size=13, max_position_embeddings=32)
    torch.manual_seed(10)
    model = transformers.LlamaModel(cfg).eval()
    ids = torch.randint(0, 13, (2, 6), generator=torch.Generator().manual_seed(2))
    ref = _adapter_reference(model, ids)
    chain = load_chain(model, sample=ids, mode="jacobian")
    assert len(chain.factors) == 4
    assert max(np.abs(f.matrix - r).max() for f, r in zip(chain.factors, ref)) < 1e-14
    # without the rebuilt buffers the rotary frequencies keep their float32 rounding
    monkeypatch.setattr(walk, "float64_buffers", lambda m: None)
    rounded = load_chain(model, sample=ids, mode="jacobian")
    assert max(np.abs(f.matrix - r).max() for f, r in zip(rounded.factors, ref)) > 1e-12


@pytest.mark.parametrize("sample, words", [
    (torch.zeros(3, D, dtype=torch.complex128), "complex"),
    (torch.tensor(1.0), "0-D"),
    ((), "empty"),
    ({1: torch.zeros(2, D)}, "names"),
    ((torch.zeros(2, D), "text"), "str"),
    (torch.full((2, D), float("nan")), "NaN"),
])
def test_bad_samples_are_one_line(sample, words):
    with pytest.raises(InvalidParameterError) as err:
        load_chain(res_mlp(), sample=sample)
    assert words in str(err.value) and "\n" not in str(err.value) and "'sample'" in str(err.value)


# -- sample files -----------------------------------------------------------------------------------

def test_sample_files_npy_npz_pt(tmp_path):
    from physgsa.models.generic import read_sample

    x, s = np.random.default_rng(0).normal(size=(3, D)), np.ones((3, D))
    np.save(tmp_path / "a.npy", x)
    np.savez(tmp_path / "pos.npz", x, s)
    np.savez(tmp_path / "kw.npz", shift=s, x=x)
    torch.save({"x": torch.from_numpy(x), "shift": torch.from_numpy(s)}, tmp_path / "d.pt")
    np.testing.assert_array_equal(read_sample(tmp_path / "a.npy"), x)
    pos = read_sample(tmp_path / "pos.npz")
    assert isinstance(pos, tuple) and len(pos) == 2
    kw = read_sample(tmp_path / "kw.npz")
    assert isinstance(kw, dict) and set(kw) == {"x", "shift"}
    model = TwoInputs()
    ref = load_chain(model, sample=(torch.from_numpy(x), torch.from_numpy(s)))
    for name in ("pos.npz", "kw.npz", "d.pt"):
        got = load_chain(model, sample=str(tmp_path / name))
        for f, r in zip(got.factors, ref.factors):
            np.testing.assert_array_equal(f.matrix, r.matrix)


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
BUILD = '''
import torch
from torch import nn

open("ran.txt", "w").write("the build file ran")


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 5), nn.Linear(5, 4)

    def forward(self, x):
        return x + self.fc2(torch.relu(self.fc1(x)))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.b = nn.Sequential(Block(), Block(), Block())

    def forward(self, x, shift):
        return self.b(x + shift)


def make():
    return Net()
'''


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "physgsa", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env=ENV, timeout=300)


def test_cli_sample_npz_and_refusals(tmp_path):
    (tmp_path / "net.py").write_text(BUILD)
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "s.npz", shift=rng.normal(size=(2, 3, 4)), x=rng.normal(size=(2, 3, 4)))
    res = cli("certify", "--build", "net.py:make", "--sample", "s.npz", "--out", "o", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "o" / "certificate.json").is_file()
    # bad sample files: one line naming the file and the flag, exit 2, nothing written
    (tmp_path / "bad.npy").write_bytes(b"not an array")
    (tmp_path / "pickled.npz").write_bytes(b"PK junk")
    for name in ("bad.npy", "missing.npz", "s.txt", "pickled.npz"):
        if name == "s.txt":
            (tmp_path / name).write_text("1 2 3")
        (tmp_path / "ran.txt").unlink(missing_ok=True)
        res = cli("certify", "--build", "net.py:make", "--sample", name, "--out", "r", cwd=tmp_path)
        assert res.returncode == 2, (name, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len([ln for ln in lines if ln.startswith("physgsa: error")]) == 1 and "Traceback" not in res.stderr
        assert "--sample" in lines[-1] and name in lines[-1], lines[-1]
        assert not (tmp_path / "r").exists() and not (tmp_path / "ran.txt").exists()  # refused before any work
