"""docs/validation.md shows the measured results, not a copy that drifted (issue 23).

Every table on the page is recomputed here from ``benchmarks/results/sensitivity/<model>.json``
(the records ``benchmarks/sensitivity.py`` wrote): the appendix must be exactly what
``benchmarks/validation_tables.py`` prints, and each model's short table in the results section
must be exactly its ``--summary`` table. An edited number, a stale table after a rerun, or a
model left "not measured" fails.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "validation.md"
RESULTS = ROOT / "benchmarks" / "results" / "sensitivity"


def _tables_module():
    spec = importlib.util.spec_from_file_location("validation_tables", ROOT / "benchmarks" / "validation_tables.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _printed(*argv: str) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert _tables_module().main(["--results", str(RESULTS), *argv]) == 0
    return buf.getvalue()


def test_the_appendix_is_what_the_results_print():
    page = PAGE.read_text(encoding="utf-8")
    marker = "predictor or the damage takes one value over the units, so there is no ranking.\n"
    assert page.count(marker) == 1
    appendix = page.split(marker, 1)[1]
    assert appendix.strip() == _printed().strip()
    assert "not measured" not in appendix


@pytest.mark.parametrize("model", ["digits-vit", "pysource-gpt", "minilm", "digits-resnet", "digits-diffusion"])
def test_each_short_table_is_its_summary(model):
    page = PAGE.read_text(encoding="utf-8").split("## Appendix", 1)[0]
    want = _printed("--summary", model).split("\n\n", 1)[1].strip()
    # The page's tables: runs of lines starting with "|".
    tables = [m.group(0).strip() for m in re.finditer(r"(?:^\|.*\n)+", page, flags=re.M)]
    assert want in tables, f"the short table of {model} on docs/validation.md is not its --summary table"
