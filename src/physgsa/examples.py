"""The example chain the README's main job runs on (until a model is given).

A seeded, residual-looking chain: each factor is ``I + R`` with ``R`` block-structured over
four channel groups (a power-law spectrum inside each block, weak couplings between blocks,
small noise), so the PAM has visible groups, supports and overlaps.
"""

from __future__ import annotations

import numpy as np

from .chain import Chain

__all__ = ["example_chain"]


def example_chain(*, n_factors: int = 6, width: int = 64, n_blocks: int = 4, seed: int = 0) -> Chain:
    """A seeded chain of ``n_factors`` near-identity ``width x width`` factors."""
    rng = np.random.default_rng(seed)
    size = width // n_blocks
    pairs = []
    for l in range(n_factors):
        r = np.zeros((width, width))
        for b in range(n_blocks):
            sl = slice(b * size, (b + 1) * size)
            u, _ = np.linalg.qr(rng.standard_normal((size, size)))
            v, _ = np.linalg.qr(rng.standard_normal((size, size)))
            s = 3.0 * np.arange(1, size + 1) ** -1.0
            r[sl, sl] = (u * s) @ v.T
        # A few hub channels read from every block.
        r[:, :2] += 0.3 * rng.standard_normal((width, 2))
        r += 0.01 * rng.standard_normal((width, width))
        pairs.append((f"blocks.{l}", np.eye(width) + r))
    return Chain.from_arrays(pairs, source="example")
