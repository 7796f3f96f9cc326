"""Model files: safetensors + JSON architecture; no pickle; clear errors."""

import json
import pickle

import numpy as np
import pytest

import chainrule as cr
from chainrule import nn
from chainrule.io import describe, state_shapes


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


# ---- hostile files: the header is checked before anything is built ---------------------------------


def _rewrite(path, out, **meta_changes):
    """A copy of model file ``path`` with metadata fields replaced (the tensors and their digests kept)."""
    from chainrule.io import read_safetensors, write_safetensors

    arrays, meta = read_safetensors(path)
    write_safetensors(out, arrays, {**meta, **meta_changes})
    return out


def _peak_bytes(fn):
    """Peak memory traced while ``fn()`` runs (NumPy's arrays included), and its exception if any."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
        error = None
    except Exception as e:  # noqa: BLE001 - returned for the test to check
        error = e
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, error


def test_an_architecture_larger_than_the_stored_tensors_is_refused_before_allocating(tmp_path):
    path = cr.save(nn.MLP([64, 4, 10], generator=0), tmp_path / "m.safetensors")
    arch = json.dumps({"type": "MLP", "config": {"sizes": [64, 1_000_000, 10], "activation": "relu"}})
    bad = _rewrite(path, tmp_path / "big.safetensors", architecture=arch)
    peak, error = _peak_bytes(lambda: cr.load(bad))
    assert isinstance(error, cr.ModelFileError), error
    assert "'0.weight' has shape (64, 4), the architecture needs (64, 1000000)" in str(error) and "big.safetensors" in str(error)
    assert peak < 2_000_000  # building the claimed network would take 256 MB


def test_loading_takes_about_the_files_size_in_memory(tmp_path):
    path = cr.save(nn.MLP([512, 1024, 512, 10], generator=0), tmp_path / "m.safetensors")
    size = path.stat().st_size  # 4.2 MB
    peak, error = _peak_bytes(lambda: cr.load(path))
    assert error is None
    assert peak < size + 1_000_000, (peak, size)


@pytest.mark.parametrize("arch, field", [
    ("[" * 30_000 + "]" * 30_000, "architecture is not valid JSON: nested too deeply"),
    ('{"type": "MLP", "config": {"sizes": ' + "[" * 70 + "]" * 70 + "}}", "deeper than 64 levels"),
    ('{"type": "MLP", "config": {"sizes": "abc"}}', "cannot work out the shapes of MLP"),
    ('{"type": "MLP", "config": {"sizes": [64, 4, 10], "colour": 1}}', "unexpected keyword argument 'colour'"),
    ('{"type": "Sequential", "config": {}}', "Sequential needs a list of 'layers'"),
    ('{"type": "MLP", "config": {"sizes": [64, 1' + "0" * 5000 + ', 10]}}', "architecture is not valid JSON"),
    ("x" * ((64 << 10) + 1), "architecture takes 65537 characters"),
], ids=["nested-30000", "nested-70", "sizes-text", "unknown-argument", "no-layers", "huge-integer", "huge-text"])
def test_malformed_architectures_are_model_file_errors_naming_the_field(tmp_path, arch, field):
    path = cr.save(nn.MLP([64, 4, 10], generator=0), tmp_path / "m.safetensors")
    bad = _rewrite(path, tmp_path / "bad.safetensors", architecture=arch)
    with pytest.raises(cr.ModelFileError, match="bad.safetensors") as e:
        cr.load(bad)
    assert field in str(e.value)


@pytest.mark.parametrize("arch", [
    {"type": "MLP", "config": {"sizes": [1] * 21_000}},
    {"type": "Sequential", "layers": [{"type": "ReLU"}] * 3_500},
    {"type": "Sequential", "layers": [{"type": "Linear", "config": {"in_features": 1, "out_features": 1}}] * 900},
], ids=["mlp-of-21000-sizes", "3500-activations", "900-linears"])
def test_the_largest_architectures_a_file_may_hold_cost_under_8_mib(tmp_path, arch):
    path = cr.save(nn.MLP([1, 1], generator=0), tmp_path / "m.safetensors")
    text = json.dumps(arch)
    assert 40_000 < len(text) <= 64 << 10  # near the limit on the architecture's size
    bad = _rewrite(path, tmp_path / "bad.safetensors", architecture=text)
    peak, error = _peak_bytes(lambda: cr.load(bad))
    assert isinstance(error, cr.ModelFileError)  # refused before building: their shapes are not the stored ones
    assert peak < bad.stat().st_size + (8 << 20), peak  # measured: 6.9 MiB for the MLP, 1.0 and 0.6 MiB for the others


def test_a_flipped_byte_inside_a_weight_is_refused_by_its_digest(tmp_path):
    from chainrule.io import read_header

    path = cr.save(nn.MLP([64, 32, 10], generator=0), tmp_path / "m.safetensors")
    file = read_header(path)
    raw = path.read_bytes()
    for name, t in file.tensors.items():
        for offset in (t.start, (t.start + t.end) // 2, t.end - 1):
            flipped = bytearray(raw)
            flipped[file.data_start + offset] ^= 0x01  # the lowest mantissa bit: still a finite number
            bad = tmp_path / "bad.safetensors"
            bad.write_bytes(bytes(flipped))
            with pytest.raises(cr.ModelFileError, match=f"tensor '{name}' does not match its SHA-256 digest"):
                cr.load(bad)


def test_files_written_before_digests_still_load(tmp_path):
    from safetensors.numpy import save

    from chainrule.io import read_safetensors

    m = nn.MLP([5, 3, 2], generator=0)
    arrays, meta = read_safetensors(cr.save(m, tmp_path / "m.safetensors"))
    old = tmp_path / "old.safetensors"
    old.write_bytes(save(arrays, metadata=meta))  # no sha256 field
    x = np.ones((2, 5), dtype=np.float32)
    np.testing.assert_array_equal(cr.predict(cr.load(old), x), cr.predict(m, x))


def test_headers_that_claim_more_than_the_file_are_refused(tmp_path):
    import struct

    path = cr.save(nn.MLP([5, 3, 2], generator=0), tmp_path / "m.safetensors")
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    header["0.weight"]["shape"] = [50_000, 3]
    text = json.dumps(header).encode()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])
    with pytest.raises(cr.ModelFileError, match=r"tensor '0.weight' of shape \(50000, 3\) \(F32\) claims bytes"):
        cr.load(bad)
    bad.write_bytes(struct.pack("<Q", 1 << 40) + raw[8:])
    with pytest.raises(cr.ModelFileError, match="header of 1099511627776 bytes in a file of"):
        cr.load(bad)


@pytest.mark.parametrize("where, message", [("folder", "is a folder, not a file"), ("/dev/null", "is not a regular file")])
def test_a_folder_or_a_device_is_named_as_such(tmp_path, where, message):
    with pytest.raises(cr.ModelFileError, match=message):
        cr.load(tmp_path if where == "folder" else where)


# An example config of every registered layer type: a new type adds one here, and its state_shapes.
EXAMPLE_CONFIGS = {
    "Linear": [{"in_features": 3, "out_features": 2}, {"in_features": 3, "out_features": 2, "bias": False}],
    "MLP": [
        {"sizes": [4, 3, 2]},
        {"sizes": [4, 3, 3, 2], "activation": "prelu", "activation_kwargs": {"num_parameters": 3}},
        {"sizes": [4, 2], "activation": "tanh"},
    ],
    "PReLU": [{}, {"num_parameters": 5}],
    "Sequential": [{}],
    "Identity": [{}], "Sigmoid": [{}], "Tanh": [{}], "ReLU": [{}], "LeakyReLU": [{}], "ELU": [{}],
    "Softmax": [{}], "LogSoftmax": [{}], "GELU": [{}, {"approximate": "tanh"}], "SiLU": [{}],
    "BatchNorm1d": [{"num_features": 3}, {"num_features": 3, "affine": False}],
    "LayerNorm": [{"normalized_shape": 3}, {"normalized_shape": [2, 3], "elementwise_affine": False}],
    "Dropout": [{"p": 0.3}],
    "Residual": [{"block": nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.ReLU())}],
}
EXAMPLE_CONFIGS["MLP"] += [
    {"sizes": [4, 3, 3, 3, 2], "residual": True, "norm": norm, "dropout": 0.2} for norm in (None, "batch", "layer")
] + [{"sizes": [4, 3, 3, 2], "norm": "batch", "activation": "prelu"}]


@pytest.mark.parametrize("name", sorted(nn.MODULES))
def test_every_layer_type_declares_the_shapes_it_builds(name):
    from chainrule.nn.module import full_config

    assert name in EXAMPLE_CONFIGS, f"add example configs of {name} to EXAMPLE_CONFIGS (and give it state_shapes)"
    cls = nn.MODULES[name]
    for config in EXAMPLE_CONFIGS[name]:
        built = cls(**config)
        declared = state_shapes(describe(built)) if cls in (nn.Sequential, nn.Residual) else cls.state_shapes(full_config(cls, config))
        assert declared == {k: tuple(v.shape) for k, v in built.state_dict().items()}
