"""Helpers shared by the tests that run real torch modules (not tests themselves)."""

import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny convs: one torch thread is 10 to 100 times faster than two on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomize_bn(model, seed=1):
    """Random eval-mode BatchNorm statistics and affine parameters (seeded), the model in float64."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))
    return model.eval().double()


class Float64(torch.overrides.TorchFunctionMode):
    """A reference run in float64: the model code's float32 casts (RMSNorm, eager softmax) kept at float64.

    Written independently of physgsa.models.precision, which the tests check against it.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        f64 = torch.float64
        if args and isinstance(args[0], torch.Tensor) and args[0].dtype == f64:
            if func is torch.Tensor.float or (func is torch.Tensor.type_as and args[1].dtype == torch.float32):
                return args[0]
            args = tuple(f64 if a is torch.float32 else a for a in args)
            if kwargs.get("dtype") is torch.float32:
                kwargs["dtype"] = f64
        return func(*args, **kwargs)


def tiny_gpt2():
    """A seeded 2-layer GPT-2 of width 16 (transformers, from a config) and one batch of 8 token ids."""
    import transformers

    cfg = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=2, n_head=2, bos_token_id=0,
                                  eos_token_id=0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    ids = torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(0))
    return model, [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}]
