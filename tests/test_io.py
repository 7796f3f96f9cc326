"""Model files: safetensors + JSON architecture; no pickle; clear errors."""

import json
import pickle

import numpy as np
import pytest

import chainrule as cr
from chainrule import nn


@pytest.mark.parametrize("model", [
    lambda: nn.MLP([6, 5, 4, 3], activation="prelu", generator=0),
    lambda: nn.MLP([6, 5, 3], activation="leaky_relu", activation_kwargs={"negative_slope": 0.2}, generator=0),
    lambda: nn.Sequential(nn.Linear(6, 4), nn.ELU(0.5), nn.Linear(4, 4, bias=False), nn.Sigmoid(), nn.Linear(4, 3), nn.Softmax()),
])
def test_save_load_predict_identical(tmp_path, model):
    m = model()
    x = np.random.default_rng(0).standard_normal((7, 6)).astype(np.float32)
    path = cr.save(m, tmp_path / "m.safetensors")
    m2 = cr.load(path)
    assert type(m2) is type(m)
    np.testing.assert_array_equal(cr.predict(m, x), cr.predict(m2, x))


def test_no_pickle_is_involved(tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "dumps", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "dump", refuse)
    m = nn.MLP([3, 2], generator=0)
    cr.load(cr.save(m, tmp_path / "m.safetensors"))
    raw = (tmp_path / "m.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    assert json.loads(header["__metadata__"]["architecture"])["type"] == "MLP"


def test_unknown_layer_names_and_bad_shapes_are_refused(tmp_path):
    from chainrule.io import read_safetensors, write_safetensors

    m = nn.MLP([3, 2], generator=0)
    path = cr.save(m, tmp_path / "m.safetensors")
    arrays, meta = read_safetensors(path)
    meta_bad = dict(meta, architecture=json.dumps({"type": "os.system", "config": {}}))
    write_safetensors(tmp_path / "bad.safetensors", arrays, meta_bad)
    with pytest.raises(cr.ModelFileError, match="unknown layer type 'os.system'"):
        cr.load(tmp_path / "bad.safetensors")
    arrays2 = dict(arrays, **{"0.weight": np.zeros((4, 2), dtype=np.float32)})
    write_safetensors(tmp_path / "shape.safetensors", arrays2, meta)
    with pytest.raises(cr.ModelFileError, match=r"'0.weight' has shape \(4, 2\)"):
        cr.load(tmp_path / "shape.safetensors")
    with pytest.raises(cr.ModelFileError, match="does not exist"):
        cr.load(tmp_path / "missing.safetensors")


def test_truncated_and_corrupted_files_are_refused(tmp_path):
    m = nn.MLP([4, 3, 2], generator=0)
    raw = cr.save(m, tmp_path / "m.safetensors").read_bytes()
    rng = np.random.default_rng(0)
    bad = tmp_path / "bad.safetensors"
    for cut in list(range(0, len(raw), max(1, len(raw) // 40))):
        bad.write_bytes(raw[:cut])
        with pytest.raises(cr.ModelFileError):
            cr.load(bad)
    header_len = int.from_bytes(raw[:8], "little")
    for offset in rng.integers(0, 8 + header_len, 60):
        flipped = bytearray(raw)
        flipped[offset] ^= 0xFF
        bad.write_bytes(bytes(flipped))
        try:
            loaded = cr.load(bad)
        except cr.ModelFileError:
            continue
        # a flip that still parses must give a model of the same architecture (e.g. inside a float)
        assert [p.shape for p in loaded.parameters()] == [p.shape for p in m.parameters()]
