"""plan.html (issue 23) in the real browser: it opens with the plan's sentence and bits, shows every
block with its chosen format shaded, names the blocks the score cannot see, and fits 900 px."""

import json

import pytest
from test_pages_issue24 import _LAYOUT, _open

import physgsa


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("plan") / "out"
    physgsa.save(physgsa.plan("digits-resnet", bits="4.6", formats="int3,int4,int8", per="depth"), out)
    return out


def test_the_plan_page_says_what_was_chosen_and_fits(plan_dir, browser):
    doc = json.loads((plan_dir / "plan.json").read_text())
    page, errors = _open(browser, plan_dir / "plan.html", 900)
    verdict = page.inner_text("#verdict")
    assert f"{len(doc['blocks'])} blocks:" in verdict and "budget of 4.6 (23/5)" in verdict
    assert doc["bits_per_weight"] in verdict
    rows = page.query_selector_all("#blocks tr")[1:]
    assert len(rows) == len(doc["blocks"])
    for row, b in zip(rows, doc["blocks"]):
        cells = [c.inner_text() for c in row.query_selector_all("td")]
        assert cells[0] == b["block"] and cells[1].startswith(b["format"])
        shaded = row.query_selector("td.chosen")
        assert shaded is not None and shaded.inner_text() == cells[4 + doc["formats"].index(b["format"])]
    assert "cannot see block0, block4" in page.inner_text("body")
    layout = page.evaluate(_LAYOUT)
    assert layout["pageWidth"] <= layout["W"] and layout["wide"] == [] and errors == [], (layout, errors)
