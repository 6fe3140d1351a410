"""The public entry points: explicit keyword-only signatures whose defaults are the parameter tables'."""

import inspect

import pytest

import physgsa
from physgsa import api
from physgsa.models import MODEL_PARAMS
from physgsa.runs.certify import CERTIFY_PARAMS
from physgsa.runs.compare import COMPARE_PARAMS
from physgsa.runs.plan import PLAN_PARAMS
from physgsa.runs.spectra import SPECTRA_PARAMS

#: (entry point, its table, table entries that are not the entry point's to set)
CASES = [
    (api.certify, CERTIFY_PARAMS, ()),
    (api.spectra, SPECTRA_PARAMS, ()),
    (api.compare, COMPARE_PARAMS, ()),
    (api.plan, PLAN_PARAMS, ()),
    (api.load_chain, MODEL_PARAMS, ()),
    (api.chain_from, MODEL_PARAMS, ()),
]


@pytest.mark.parametrize("func, table, internal", CASES, ids=lambda x: getattr(x, "__name__", ""))
def test_every_table_entry_is_a_keyword_only_parameter_with_the_table_default(func, table, internal):
    sig = inspect.signature(func)
    params = sig.parameters
    assert not any(p.kind is p.VAR_KEYWORD for p in params.values()), f"{func.__name__} hides parameters in **"
    for name, entry in table.items():
        if name in internal:
            continue
        assert name in params, f"{func.__name__} lacks {name}"
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, name
        want = inspect.Parameter.empty if entry.default is ... else entry.default  # ...: required
        assert params[name].default == want, (func.__name__, name, params[name].default, entry.default)


def test_the_public_names_are_the_entry_points():
    for name in ("certify", "spectra", "compare", "study", "plan", "save", "chain_from", "load_chain", "load_result"):
        assert getattr(physgsa, name) is getattr(api, name), name
        assert name in physgsa.__all__
    assert physgsa.adapters.load_chain is physgsa.models.load_chain
    assert callable(physgsa.tracking.record_spectra)
