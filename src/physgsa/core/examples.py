"""The example chain the README's main job runs on (until a model is given).

A seeded chain of branch-like factors with planted channel structure: each factor routes
four channel blocks through a strong rank-one map per block (the dominant window), reads a
couple of hub channels from every block, and carries Gaussian noise that grows with depth.
So the first interfaces certify and the deeper, noisier ones fail, and the report shows both.
"""

from __future__ import annotations

import numpy as np

from .chain import Chain

__all__ = ["example_chain"]


def example_chain(*, n_factors: int = 6, width: int = 64, n_blocks: int = 4, noise: float = 1e-4,
                  growth: float = 3.0, seed: int = 0) -> Chain:
    """A seeded chain of ``n_factors`` ``width x width`` factors (noise ``noise * growth**l``)."""
    rng = np.random.default_rng(seed)
    size = width // n_blocks
    pairs = []
    for l in range(n_factors):
        a = np.zeros((width, width))
        for b in range(n_blocks):
            sl = slice(b * size, (b + 1) * size)
            x = (1 + 0.2 * rng.random(size)) * rng.choice([-1.0, 1.0], size)
            y = (1 + 0.2 * rng.random(size)) * rng.choice([-1.0, 1.0], size)
            a[sl, sl] += (1.0 - 0.02 * b) * np.outer(x, y)
        a += noise * growth**l * rng.standard_normal((width, width))
        pairs.append((f"blocks.{l}", a))
    return Chain.from_arrays(pairs, source="example")
