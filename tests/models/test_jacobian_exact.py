"""Jacobian mode differentiates each sublayer exactly as the model computes it.

Every reference here is computed independently of physgsa.models.jacobian: the model's own
``forward`` (with its own mask construction and attention implementation, here SDPA while
physgsa differentiates an eager copy) runs with the input injected at one sublayer through
forward hooks, and ``torch.autograd.functional.jacobian`` differentiates it. The toy sublayer
``F(X) = A X W^T`` has every quantity in closed form.
"""

import copy

import numpy as np
import pytest
import torch
import transformers
from typer.testing import CliRunner

from physgsa.core.validation import InvalidParameterError
from physgsa.models import load_chain
from physgsa.models.jacobian import encodings, token_jacobian, transformer_sublayers

transformers.logging.set_verbosity_error()

SEED = 3


def tiny_gpt2(attn="eager"):
    """Eager attention is what load_module gives every model loaded from a folder."""
    torch.manual_seed(0)
    # initializer_range 0.3 (not 0.02): peaked attention and branches comparable with the identity,
    # so that a wrong mask moves the factors by far more than rounding.
    cfg = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, n_positions=32, vocab_size=50,
                                  bos_token_id=0, eos_token_id=0, initializer_range=0.3, attn_implementation=attn)
    return transformers.GPT2Model(cfg).eval().double()


def tiny_bert():
    torch.manual_seed(1)
    cfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=16, num_attention_heads=2, intermediate_size=32,
                                  vocab_size=50, max_position_embeddings=32, initializer_range=0.3)
    return transformers.BertModel(cfg).eval().double()


def _block(model, l):
    return model.h[l] if model.config.model_type == "gpt2" else model.encoder.layer[l]


def real_sublayer(model, enc, l, kind, factor):
    """x (T, d) -> the sublayer's output when the model's own forward runs with x injected.

    attn: x replaces block l's input. mlp: x becomes the residual stream after the attention
    (GPT-2: block input x and attention output 0, so ``0 + x = x`` exactly; BERT: the
    attention module returns x). The output is read where the model computes it: full =
    the hidden state after the sublayer, branch = the branch's output before the residual.
    """
    gpt = model.config.model_type == "gpt2"
    block = _block(model, l)
    if kind == "attn":
        if factor == "full":
            target, read = (block.ln_2, "input") if gpt else (block.attention, "first")
        else:
            target, read = (block.attn, "first") if gpt else (block.attention.output.dense, "output")
    else:
        target, read = (block, "output") if factor == "full" else ((block.mlp if gpt else block.output.dense), "output")

    def fn(x):
        box, handles = {}, []

        def put_input(mod, args, kwargs):
            if args:
                return (x[None],) + tuple(args[1:]), kwargs
            return args, {**kwargs, "hidden_states": x[None]}

        def read_input(mod, args, kwargs):
            box["y"] = args[0] if args else kwargs["hidden_states"]

        def read_output(mod, args, out):
            box["y"] = out[0] if read == "first" else out

        try:
            if kind == "attn" or gpt:
                handles.append(block.register_forward_pre_hook(put_input, with_kwargs=True))
            if kind == "mlp":
                if gpt:
                    handles.append(block.attn.register_forward_hook(lambda m, a, o: (torch.zeros_like(o[0]),) + o[1:]))
                else:
                    handles.append(block.attention.register_forward_hook(lambda m, a, o: (x[None],) + o[1:]))
            if read == "input":
                handles.append(target.register_forward_pre_hook(read_input, with_kwargs=True))
            else:
                handles.append(target.register_forward_hook(read_output))
            model(**enc)
        finally:
            for h in handles:
                h.remove()
        return box["y"][0]

    return fn


def real_points(model, enc):
    """The model's own hidden states entering each sublayer: {(l, kind): (T, d)}."""
    gpt = model.config.model_type == "gpt2"
    pts, handles = {}, []
    n = len(model.h) if gpt else len(model.encoder.layer)
    for l in range(n):
        b = _block(model, l)
        handles.append(b.register_forward_pre_hook(
            lambda m, a, k, l=l: pts.__setitem__((l, "attn"), (a[0] if a else k["hidden_states"])[0].detach()),
            with_kwargs=True))
        if gpt:
            handles.append(b.ln_2.register_forward_pre_hook(
                lambda m, a, l=l: pts.__setitem__((l, "mlp"), a[0][0].detach())))
        else:
            handles.append(b.attention.register_forward_hook(
                lambda m, a, o, l=l: pts.__setitem__((l, "mlp"), o[0][0].detach())))
    try:
        with torch.no_grad():
            model(**enc)
    finally:
        for h in handles:
            h.remove()
    return pts


def full_jacobian(fn, x):
    return torch.autograd.functional.jacobian(fn, x, vectorize=True)  # (T, d, T, d)


def reduce(jac, tokens):
    """The reduced factor, the kept energy and ||J||_F^2 of a (T, d, T, d) Jacobian, from definitions."""
    t_len, d = jac.shape[:2]
    big = jac.reshape(t_len * d, t_len * d)
    if tokens == "uniform":
        mat = sum(jac[t, :, s, :] for t in range(t_len) for s in range(t_len)) / t_len
        proj = torch.kron(torch.full((t_len, t_len), 1.0 / t_len, dtype=jac.dtype), torch.eye(d, dtype=jac.dtype))
        kept = float((big @ proj).pow(2).sum())  # ||J P||_F^2, P the projector onto token-uniform inputs
    else:
        mat = sum(jac[t, :, t, :] for t in range(t_len)) / t_len
        kept = float(sum(jac[t, :, t, :].pow(2).sum() for t in range(t_len)))
    return mat.numpy(), kept, float(big.pow(2).sum())


def reference_factors(model, encs, factor):
    """{tokens: {name: (mean reduced matrix, sum kept, sum total, [complement forms M])}} of the real forward."""
    out = {"uniform": {}, "diagonal": {}}
    n_blocks = len(model.h) if model.config.model_type == "gpt2" else len(model.encoder.layer)
    for enc in encs:
        pts = real_points(model, enc)
        for l in range(n_blocks):
            for kind in ("attn", "mlp"):
                x = pts[(l, kind)]
                jac = full_jacobian(real_sublayer(model, enc, l, kind, factor), x)
                t_len, d = x.shape
                big = jac.reshape(t_len * d, t_len * d)
                q = torch.eye(t_len * d, dtype=x.dtype) - torch.kron(
                    torch.full((t_len, t_len), 1.0 / t_len, dtype=x.dtype), torch.eye(d, dtype=x.dtype))
                comp = q @ big.T @ big @ q  # the quadratic form the Hutchinson probes sample
                for tokens, acc in out.items():
                    mat, kept, total = reduce(jac, tokens)
                    m, k, tt, ms = acc.get(f"blocks.{l}.{kind}", (0.0, 0.0, 0.0, []))
                    acc[f"blocks.{l}.{kind}"] = (m + mat / len(encs), k + kept, tt + total, ms + [comp])
    return out


def relative(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def check_chain_against_real_forward(chain, ref, factor, tokens, probes=64):
    """Every factor equals the reduced Jacobian of the real forward; energy_kept as defined."""
    ref = ref[tokens]
    assert [f.name for f in chain.factors] == list(ref)
    for f in chain.factors:
        mat, kept, total, comps = ref[f.name]
        err = relative(f.matrix, mat)
        assert err < 1e-10, f"{f.name} ({factor}, {tokens}): relative error {err:.3g} against the real forward"
        assert f.provenance["tokens"] == tokens
        got = f.provenance["energy_kept"]
        if f.provenance["energy_kept_method"] == "exact":
            assert got == pytest.approx(kept / total, rel=1e-10, abs=1e-12), f.name
        else:
            # Hutchinson on ||J (I - P)||_F^2: per input Var(z^T M z) <= 2 ||M||_F^2 (Rademacher z),
            # so the sum over inputs is within 4 standard deviations of sqrt(sum 2 ||M||_F^2 / probes).
            assert f.provenance["energy_kept_method"] == f"hutchinson-{probes}"
            four_sd = 4 * np.sqrt(sum(2 * float(m.pow(2).sum()) / probes for m in comps))
            rest = total - kept
            lo, hi = kept / (kept + rest + four_sd), kept / max(kept + rest - four_sd, kept)
            assert lo <= got <= hi, (f.name, got, kept / total, lo, hi)


_CHAINS = {}


def chain_of(make, factor, tokens, *args):
    """load_chain(mode="jacobian") of a tiny model on the random inputs, built once per session."""
    key = (make.__name__, factor, tokens, *args)
    if key not in _CHAINS:
        _CHAINS[key] = load_chain(make(*args), mode="jacobian", inputs="random", seed=SEED, factor=factor,
                                  tokens=tokens)
    return _CHAINS[key]


@pytest.mark.parametrize("make", [lambda: tiny_gpt2("sdpa"), tiny_bert], ids=["gpt2", "bert"])
def test_sublayer_maps_reproduce_the_models_hidden_states(make):
    """(a) attn then mlp of every block, from the embeddings, gives output_hidden_states to 1e-12.

    The hidden states come from the model as built (SDPA) and from its eager twin; the maps
    always run on the eager twin, as jacobian_chain does.
    """
    model = make()
    eager = copy.deepcopy(model)  # its own config: set_attn_implementation writes to the config
    eager.set_attn_implementation("eager")
    assert model.config._attn_implementation == "sdpa"
    for enc in encodings(model, None, "random", SEED)[0]:
        x0, subs = transformer_sublayers(eager, enc, factor="full")
        for real in (model, eager):
            with torch.no_grad():
                hs = real(**enc, output_hidden_states=True).hidden_states
            np.testing.assert_array_equal(x0.numpy(), hs[0][0].numpy())
            x = x0
            with torch.no_grad():
                for l in range(len(subs) // 2):
                    x = subs[2 * l + 1].full(subs[2 * l].full(x))
                    # GPT-2's last hidden state is after its final ln_f (no factor holds ln_f).
                    last = model.config.model_type == "gpt2" and l == len(subs) // 2 - 1
                    y = model.ln_f(x) if last else x
                    np.testing.assert_allclose(y.numpy(), hs[l + 1][0].numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("factor, attn", [("full", "eager"), ("branch", "eager"), ("full", "sdpa")])
def test_gpt2_factors_are_jacobians_of_the_causal_model(factor, attn):
    """(b) each factor = the reduced autograd Jacobian of the real causal GPT-2 forward.

    Eager: the model adds its causal mask (the old maps passed none, so tokens saw the future).
    SDPA: the reference runs the fused kernel while physgsa differentiates an eager copy.
    """
    model = tiny_gpt2(attn)
    encs = encodings(model, None, "random", SEED)[0]
    ref = reference_factors(model, encs, factor)
    for tokens in ("uniform", "diagonal"):
        check_chain_against_real_forward(chain_of(tiny_gpt2, factor, tokens, attn), ref, factor, tokens)
    # The test sees the bug it guards: without the causal mask (the old maps on eager attention;
    # with SDPA a missing mask means is_causal=True) blocks.0.attn is far off.
    b = tiny_gpt2("eager").h[0]
    for tokens in ("uniform", "diagonal"):
        old = 0.0
        for enc in encs:
            x = real_points(model, enc)[(0, "attn")]
            no_mask = full_jacobian(lambda v: (v if factor == "full" else 0) + b.attn(b.ln_1(v[None]))[0][0], x)
            old = old + reduce(no_mask, tokens)[0] / len(encs)
        assert relative(old, ref[tokens]["blocks.0.attn"][0]) > 0.1


@pytest.mark.parametrize("factor", ["full", "branch"])
def test_bert_factors_are_jacobians_of_the_real_model(factor):
    model = tiny_bert()
    ref = reference_factors(model, encodings(model, None, "random", SEED)[0], factor)
    for tokens in ("uniform", "diagonal"):
        check_chain_against_real_forward(chain_of(tiny_bert, factor, tokens), ref, factor, tokens)


def test_pre_ln_full_is_identity_plus_branch():
    """GPT-2: J_full = I + J_branch for the (T d x T d) Jacobians and for both reduced factors."""
    model = tiny_gpt2()
    enc = encodings(model, None, "random", SEED)[0][0]
    x0, full = transformer_sublayers(model, enc, factor="full")
    _, branch = transformer_sublayers(model, enc, factor="branch")
    x = x0
    for f, g in zip(full, branch):
        jf, jb = full_jacobian(f.f, x), full_jacobian(g.f, x)
        n = jf.shape[0] * jf.shape[1]
        np.testing.assert_allclose(jf.reshape(n, n), torch.eye(n, dtype=x.dtype) + jb.reshape(n, n), atol=1e-12, rtol=0)
        with torch.no_grad():
            x = f.full(x)
    for tokens in ("uniform", "diagonal"):
        cf, cb = chain_of(tiny_gpt2, "full", tokens, "eager"), chain_of(tiny_gpt2, "branch", tokens, "eager")
        for a, b in zip(cf.factors, cb.factors):
            np.testing.assert_allclose(a.matrix, np.eye(16) + b.matrix, atol=1e-12, rtol=0)


def test_post_ln_full_is_layernorm_jacobian_times_identity_plus_branch():
    """BERT: J_full[t, s] = J_LN(y_t) (delta_ts I + J_branch[t, s]), y = x + branch(x)."""
    model = tiny_bert()
    model.set_attn_implementation("eager")
    enc = encodings(model, None, "random", SEED)[0][0]
    x0, full = transformer_sublayers(model, enc, factor="full")
    _, branch = transformer_sublayers(model, enc, factor="branch")
    x = x0
    for k, (f, g) in enumerate(zip(full, branch)):
        layer = model.encoder.layer[k // 2]
        ln = layer.attention.output.LayerNorm if f.name.endswith(".attn") else layer.output.LayerNorm
        with torch.no_grad():
            y = x + g.f(x)
        t_len, d = x.shape
        jln = torch.block_diag(*[torch.autograd.functional.jacobian(ln, y[t]) for t in range(t_len)])
        jf = full_jacobian(f.f, x).reshape(t_len * d, t_len * d)
        jb = full_jacobian(g.f, x).reshape(t_len * d, t_len * d)
        np.testing.assert_allclose(jf, jln @ (torch.eye(t_len * d, dtype=x.dtype) + jb), atol=1e-12, rtol=0)
        assert not np.allclose(jf, torch.eye(t_len * d, dtype=x.dtype) + jb, atol=1e-3)  # post-LN: full != I + branch
        with torch.no_grad():
            x = f.full(x)


def toy(t_len=5, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(t_len, t_len, generator=g, dtype=torch.float64)
    w = torch.randn(d, d, generator=g, dtype=torch.float64)
    x = torch.randn(t_len, d, generator=g, dtype=torch.float64)
    return a, w, x


def test_token_reductions_on_a_linear_token_mixing_map():
    """F(X) = A X W^T: J[t, s] = A_ts W, so J_u = (1^T A 1 / T) W, J_d = (tr A / T) W,
    energy_kept(uniform) = ||A 1||^2 / (T ||A||_F^2), energy_kept(diagonal) = sum_t A_tt^2 / ||A||_F^2."""
    a, w, x = toy()
    t_len = a.shape[0]
    def f(v):
        return a @ v @ w.T

    one = torch.ones(t_len, dtype=torch.float64)
    u = token_jacobian(f, x, tokens="uniform", probes=0)
    np.testing.assert_allclose(u.matrix, (one @ a @ one / t_len * w).numpy(), atol=1e-13, rtol=0)
    assert u.kept / u.total == pytest.approx(float((a @ one).pow(2).sum() / (t_len * a.pow(2).sum())), rel=1e-12)
    assert u.total == pytest.approx(float(a.pow(2).sum() * w.pow(2).sum()), rel=1e-12) and u.method == "exact"
    dg = token_jacobian(f, x, tokens="diagonal")
    np.testing.assert_allclose(dg.matrix, (torch.trace(a) / t_len * w).numpy(), atol=1e-13, rtol=0)
    assert dg.kept / dg.total == pytest.approx(float(torch.diagonal(a).pow(2).sum() / a.pow(2).sum()), rel=1e-12)
    # Hutchinson: ||J (I - P)||_F^2 = ||A (I - 11^T/T)||_F^2 ||W||_F^2, within 4 sd of 64 Rademacher probes.
    h = token_jacobian(f, x, tokens="uniform", generator=torch.Generator().manual_seed(SEED))
    assert h.method == "hutchinson-64" and h.kept == pytest.approx(u.kept, rel=1e-12)
    q = torch.eye(t_len, dtype=torch.float64) - torch.full((t_len, t_len), 1.0 / t_len, dtype=torch.float64)
    m = torch.kron(q @ a.T @ a @ q, w.T @ w)
    assert abs((h.total - h.kept) - (u.total - u.kept)) <= 4 * np.sqrt(2 * float(m.pow(2).sum()) / 64)


def test_token_local_map_keeps_one_over_t_uniform_and_all_diagonal():
    """A token-local F(X)[t] = W tanh(X[t]): both reductions give mean_t W diag(tanh'(X[t]));
    energy_kept is 1 (diagonal) and exactly 1/T (uniform, ||J P||^2 = ||J||^2 / T for block-diagonal J)."""
    _, w, x = toy(seed=1)
    def f(v):
        return torch.tanh(v) @ w.T

    ref = sum(w * (1 - torch.tanh(x[t]) ** 2) for t in range(x.shape[0])).numpy() / x.shape[0]
    for tokens, share in (("uniform", 1 / x.shape[0]), ("diagonal", 1.0)):
        for local in (True, False):
            r = token_jacobian(f, x, tokens=tokens, local=local, probes=0)
            np.testing.assert_allclose(r.matrix, ref, atol=1e-13, rtol=0)
            assert r.kept / r.total == pytest.approx(share, rel=1e-12) and r.method == "exact"


def test_tokens_parameter_is_checked_and_reaches_the_jacobian(monkeypatch):
    with pytest.raises(InvalidParameterError, match="'tokens' parameter of load_chain"):
        load_chain(tiny_gpt2(), mode="jacobian", inputs="random", tokens="mean")
    with pytest.raises(InvalidParameterError, match="'tokens' parameter of token_jacobian"):
        token_jacobian(lambda v: v, torch.zeros(2, 2, dtype=torch.float64), tokens="all")
    from physgsa.models.bundled.digits import untrained_model

    with pytest.raises(InvalidParameterError, match="'tokens' parameter of jacobian_chain must be 'uniform' for a CNN"):
        load_chain(untrained_model().eval(), mode="jacobian", inputs="random", tokens="diagonal")

    import physgsa.models.jacobian as jac
    from physgsa.cli import app
    from physgsa.models.sources import ModelSourceError

    seen = {}

    def spy(source, **kw):
        seen.update(kw)
        raise ModelSourceError("stop here")

    monkeypatch.setattr(jac, "jacobian_chain", spy)
    res = CliRunner().invoke(app, ["certify", "somewhere", "--mode", "jacobian", "--tokens", "diagonal", "--out", "x"])
    assert res.exit_code != 0 and seen["tokens"] == "diagonal"
    res = CliRunner().invoke(app, ["certify", "somewhere", "--mode", "jacobian", "--tokens", "mean", "--out", "x"])
    assert res.exit_code != 0 and "tokens" in res.output
