"""How many cases the long fuzz and crash tests run (issue 25: the README's test command in minutes).

The README's command runs the quick counts. CI (``.ci/run``) sets ``PHYSGSA_FULL_TESTS=1`` and runs
the full ones, as it sets ``PHYSGSA_FULL_TRAINING=1`` for the full trainings. The seeds are the
same: a seeded loop's quick cases are the first of its full ones, and hypothesis draws the quick
examples from the same fixed seed.
"""

import os

FULL = bool(os.environ.get("PHYSGSA_FULL_TESTS"))


def cases(full: int, quick: int) -> int:
    """``full`` under ``PHYSGSA_FULL_TESTS=1`` (CI), else ``quick``."""
    return full if FULL else quick
