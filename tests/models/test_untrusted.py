"""Files from strangers: nothing in them runs, nothing they name is written outside --out,
and absurd sizes are refused before any allocation."""

import json
import os
import struct
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest

import physgsa
import physgsa.runs.records
from physgsa import ChainFileError
from physgsa.models import ModelSourceError

ENV = dict(os.environ, HF_HUB_OFFLINE="1")


def test_remote_code_in_a_config_is_never_run(tmp_path):
    # A folder whose config asks transformers for custom code that would leave a marker on import.
    import torch
    from safetensors.torch import save_file

    marker = tmp_path / "owned"
    (tmp_path / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    (tmp_path / "configuration_evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "evil", "architectures": ["EvilModel"],
        "auto_map": {"AutoConfig": "configuration_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"}}))
    save_file({"layer.weight": torch.ones(4, 4)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ModelSourceError, match="transformers cannot build it"):
        physgsa.chain_from(tmp_path)
    assert not marker.exists()
    r = subprocess.run([sys.executable, "-m", "physgsa", "certify", str(tmp_path), "--out", str(tmp_path / "o")],
                       env=ENV, capture_output=True, text=True)
    assert r.returncode == 2 and not marker.exists()


def test_names_from_files_never_become_paths(tmp_path):
    rng = np.random.default_rng(0)
    names = ["../../escaped", "/tmp/abs-" + tmp_path.name, "..\\win", "<script>alert(1)</script>"]
    arrays = {n: np.eye(6) + 0.1 * rng.standard_normal((6, 6)) for n in names}
    path = tmp_path / "deep" / "chain.npz"
    path.parent.mkdir()
    np.savez(path, **arrays)
    before = set(tmp_path.parent.rglob("*"))
    out = tmp_path / "deep" / "out"
    r = subprocess.run([sys.executable, "-m", "physgsa", "certify", str(path), "--out", str(out), "--quiet",
                        "--n-perturbations", "4"], env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    written = physgsa.outputs.result.OUTPUT_FILES + ("profile.parquet", "report.html", "provenance.json", "figures")
    assert sorted(p.name for p in out.iterdir()) == sorted(written)
    after = set(tmp_path.parent.rglob("*"))
    new = {p for p in after - before if out not in p.parents and p != out}
    assert new == set(), new  # nothing written anywhere but inside --out
    assert not (tmp_path / "escaped").exists() and not os.path.exists("/tmp/abs-" + tmp_path.name)
    html = (out / "report.html").read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def _st(header: dict | bytes, payload=b"", declared=None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if declared is None else declared) + raw + payload


@pytest.mark.parametrize("doc, match", [
    (_st({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}, bytes(16), declared=1 << 60),
     "declares a 1152921504606846976-byte header"),
    (_st({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 1 << 62]}}, bytes(16)), "out-of-range"),
    (_st({"a": {"dtype": "F64", "shape": [1 << 62, 1 << 62], "data_offsets": [0, 0]}}), "declares shape"),
    (_st({"a": {"dtype": "F64", "shape": [1 << 31, 1 << 33], "data_offsets": [0, 0]}}), "declares shape"),
    (_st({"a": {"dtype": "F32", "shape": [-1, 4], "data_offsets": [0, 16]}}, bytes(16)), "malformed"),
])
def test_absurd_safetensors_headers_are_refused_before_allocation(tmp_path, doc, match):
    path = tmp_path / "x.safetensors"
    path.write_bytes(doc)
    tracemalloc.start()
    t = time.perf_counter()
    with pytest.raises(ChainFileError, match=match):
        physgsa.read_chain(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20 and time.perf_counter() - t < 1.0


@pytest.mark.parametrize("change, match", [({"vocab_size": 1 << 34}, "describes a model of [0-9]+ parameters"),
                                           ({"num_hidden_layers": 10**9}, "num_hidden_layers = 1000000000")])
def test_a_config_cannot_make_the_generic_walker_allocate_beyond_the_weights(tmp_path, change, match):
    # An architecture without an adapter is built by transformers from its config.json before its
    # weights load: a config describing far more than the checkpoint holds is refused first.
    import transformers

    cfg = transformers.OPTConfig(num_hidden_layers=1, hidden_size=16, ffn_dim=32, num_attention_heads=2,
                                 vocab_size=20, word_embed_proj_dim=16, max_position_embeddings=32)
    transformers.OPTModel(cfg).save_pretrained(tmp_path / "m")  # no adapter: the generic walker's path
    doc = json.loads((tmp_path / "m" / "config.json").read_text())
    doc.update(change)
    (tmp_path / "m" / "config.json").write_text(json.dumps(doc))
    t = time.perf_counter()
    with pytest.raises(ModelSourceError, match=match):
        physgsa.chain_from(tmp_path / "m")
    assert time.perf_counter() - t < 30
