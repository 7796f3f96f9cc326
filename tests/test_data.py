"""chainrule.data: the digits, the objects multi-label set, function sets and the registry by name."""

import numpy as np
import pytest

import chainrule as cr
from chainrule.data import (
    DATASETS,
    FUNCTIONS,
    OBJECT_NAMES,
    SETS_2D,
    dataset_info,
    load_dataset,
    load_digits,
    load_objects,
    make_2d,
    make_function,
    train_test_split,
)
from chainrule.errors import DataError

# ---- digits ---------------------------------------------------------------------------


def test_digits_are_scaled_to_unit_interval():
    X, y = load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32
    assert y.shape == (1797,) and set(np.unique(y)) == set(range(10))
    assert X.min() == 0.0 and X.max() == 1.0


def test_binary_digits_threshold_the_scaled_pixels():
    X, _ = load_digits()
    B, _ = load_digits(binary=True)
    assert set(np.unique(B)) == {0.0, 1.0}
    np.testing.assert_array_equal(B, (X >= 0.5).astype(np.float32))


def test_split_is_stratified_disjoint_and_seeded():
    X, y = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, seed=0)
    assert len(X_train) + len(X_test) == len(X) and len(X_test) == 450
    counts = np.bincount(y, minlength=10)
    # each class keeps its share of the test set, to within one rounding
    assert np.all(np.abs(np.bincount(y_test, minlength=10) - counts * 0.25) <= 0.5 + 1e-9)
    ids = np.arange(len(y)).reshape(-1, 1)
    id_train, id_test, _, _ = train_test_split(ids, y, test_size=0.25, seed=0)
    assert sorted(np.concatenate([id_train, id_test])[:, 0].tolist()) == list(range(len(y)))
    again = train_test_split(X, y, test_size=0.25, seed=0)
    np.testing.assert_array_equal(again[1], X_test)
    other = train_test_split(X, y, test_size=0.25, seed=1)
    assert not np.array_equal(other[1], X_test)


def test_split_refuses_mismatched_lengths_and_bad_sizes():
    with pytest.raises(DataError, match="one row per sample"):
        train_test_split(np.zeros((4, 2)), np.zeros(3))
    with pytest.raises(DataError, match="test_size"):
        train_test_split(np.zeros((4, 2)), np.zeros(4), test_size=1.5)


# ---- objects --------------------------------------------------------------------------

# bright pixels of each shape drawn alone, without noise
_STENCIL_PIXELS = {"horizontal_bar": 6, "vertical_bar": 6, "square": 12, "diagonal": 5, "cross": 5}


def test_objects_shapes_types_and_labels():
    X, Y, names = load_objects(n_samples=500, seed=0)
    assert X.shape == (500, 144) and X.dtype == np.float32
    assert Y.shape == (500, 5) and Y.dtype == np.float32
    assert names == list(OBJECT_NAMES) and len(names) >= 4
    assert set(np.unique(Y)) == {0.0, 1.0}
    assert 0.0 <= X.min() and X.max() <= 1.0
    # each shape present about half the time; several shapes per image are common
    assert np.all(np.abs(Y.mean(axis=0) - 0.5) < 0.08)
    assert (Y.sum(axis=1) >= 2).mean() > 0.6


def test_objects_repeat_by_seed():
    a = load_objects(n_samples=50, seed=3)
    b = load_objects(n_samples=50, seed=3)
    c = load_objects(n_samples=50, seed=4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("size", [8, 16])
def test_each_shape_alone_draws_its_own_pattern(size):
    X, Y, names = load_objects(n_samples=400, size=size, seed=1, noise=0.0)
    assert X.shape[1] == size * size
    for j, name in enumerate(names):
        alone = (Y[:, j] == 1) & (Y.sum(axis=1) == 1)
        assert alone.any(), name
        counts = (X[alone] > 0).sum(axis=1)
        assert np.all(counts == _STENCIL_PIXELS[name]), name
        assert np.all((X[alone].max(axis=1) >= 0.6) & (X[alone].max(axis=1) <= 1.0))
    empty = Y.sum(axis=1) == 0
    assert np.all(X[empty] == 0)


def test_objects_noise_touches_every_image():
    X, Y, _ = load_objects(n_samples=200, seed=0, noise=0.1)
    empty = Y.sum(axis=1) == 0
    assert empty.any() and np.all(X[empty].max(axis=1) > 0)


@pytest.mark.parametrize("kwargs, match", [({"size": 6}, "size"), ({"n_samples": 0}, "n_samples"), ({"noise": -1}, "noise"), ({"p": 1.0}, "p must")])
def test_objects_refuse_bad_arguments(kwargs, match):
    with pytest.raises(DataError, match=match):
        load_objects(**kwargs)


@pytest.mark.slow
def test_objects_need_a_hidden_layer_but_are_learnable():
    # measured (seed 0): linear micro-F1 0.675, one hidden layer of 128: 0.798
    X, Y, _ = load_objects(n_samples=3000, seed=1)
    X_train, X_test, y_train, y_test = train_test_split(X, Y, 0.25, 0)
    f1 = {}
    for sizes in ([144, 5], [144, 128, 5]):
        model = cr.nn.MLP(sizes, generator=0)
        cr.fit(model, "bce", cr.optim.Adam(model.parameters(), lr=1e-3), X_train, y_train, epochs=15, progress=False)
        f1[len(sizes)] = cr.evaluate(model, "bce", X_test, y_test)["micro_f1"]
    assert f1[2] < 0.72
    assert f1[3] > 0.76
    assert f1[3] - f1[2] > 0.08


# ---- functions and 2-D sets -------------------------------------------------------------


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_function_sets_follow_their_formula(name):
    X, y = make_function(name, n=300, seed=0)
    assert X.shape == (300, 1) and y.shape == (300, 1)
    assert X.dtype == np.float32 and y.dtype == np.float32
    assert np.all(np.diff(X[:, 0]) >= 0) and -1 <= X.min() and X.max() <= 1
    x = X[:, 0].astype(np.float64)
    expected = {
        "sine": np.sin(np.pi * x),
        "abs": np.abs(x),
        "step": (x >= 0).astype(float),
        "sawtooth": 2 * np.mod(x + 1, 1) - 1,
    }[name]
    np.testing.assert_allclose(y[:, 0], expected, atol=1e-5)


def test_function_noise_has_the_asked_spread():
    X, clean = make_function("abs", n=4000, seed=0)
    _, noisy = make_function("abs", n=4000, seed=0, noise=0.2)
    assert abs(float(np.std(noisy - np.abs(X))) - 0.2) < 0.01
    assert not np.array_equal(noisy, clean)


def test_make_2d_sets():
    for name in SETS_2D:
        X, y = make_2d(name, n=400, seed=0)
        assert X.shape == (400, 2) and X.dtype == np.float32
        assert y.shape == (400,) and set(np.unique(y)) == {0, 1}
        assert 150 < y.sum() < 250, name
    X, y = make_2d("circles", n=1000, seed=0, noise=0.0)
    r = np.linalg.norm(X, axis=1)
    np.testing.assert_allclose(r[y == 0], 1.0, atol=1e-5)
    np.testing.assert_allclose(r[y == 1], 0.5, atol=1e-5)
    X, y = make_2d("xor", n=1000, seed=0, noise=0.0)
    np.testing.assert_array_equal(y, (X[:, 0] * X[:, 1] < 0).astype(np.int64))
    X, y = make_2d("spirals", n=1000, seed=0, noise=0.0)
    r = np.linalg.norm(X, axis=1)
    assert 0.099 < r.min() and r.max() < 1.0001
    np.testing.assert_array_equal(np.bincount(y), [500, 500])


@pytest.mark.parametrize("fn, name", [(make_function, "cosine"), (make_2d, "moons")])
def test_unknown_generated_sets_list_the_valid_names(fn, name):
    with pytest.raises(DataError, match="expected one of"):
        fn(name)


# ---- the registry -----------------------------------------------------------------------


def test_registry_names_the_promised_datasets():
    assert set(DATASETS) == {"digits", "digits-binary", "objects", "spirals", "xor", "circles", "sine", "abs", "step", "sawtooth"}


@pytest.mark.parametrize("name", list(DATASETS))
def test_load_dataset_matches_its_description(name):
    info = dataset_info(name)
    ds = load_dataset(name, seed=0)
    assert ds.name == name and ds.task == info.task and ds.task in ("multiclass", "multilabel", "regression")
    assert ds.X_train.dtype == np.float32 and ds.X_test.dtype == np.float32
    assert ds.num_features == info.num_features == ds.X_test.shape[1]
    assert ds.num_outputs == info.num_outputs and len(ds.names) == (ds.num_outputs if ds.task != "regression" else 1)
    n = len(ds.X_train) + len(ds.X_test)
    assert abs(len(ds.X_test) - 0.25 * n) <= 10
    assert len(ds.y_train) == len(ds.X_train) and len(ds.y_test) == len(ds.X_test)
    if ds.image_shape is not None:
        assert int(np.prod(ds.image_shape)) == ds.num_features
    if ds.task == "multiclass":
        assert ds.y_train.ndim == 1 and ds.y_train.dtype == np.int64 and ds.y_train.max() < ds.num_outputs
    elif ds.task == "multilabel":
        assert ds.y_train.shape[1] == ds.num_outputs and set(np.unique(ds.y_train)) <= {0.0, 1.0}
    else:
        assert ds.y_train.shape[1] == 1 and ds.y_train.dtype == np.float32
    assert ds["X_train"] is ds.X_train  # readable as a mapping too
    again = load_dataset(name, seed=0)
    np.testing.assert_array_equal(again.X_test, ds.X_test)


def test_load_dataset_seed_changes_generated_data_and_split():
    a, b = load_dataset("spirals", seed=0), load_dataset("spirals", seed=1)
    assert not np.array_equal(a.X_train, b.X_train)
    d0, d1 = load_dataset("digits", seed=0), load_dataset("digits", seed=1)
    assert not np.array_equal(d0.y_test, d1.y_test)
    np.testing.assert_array_equal(np.bincount(d0.y_test), np.bincount(d1.y_test))  # both stratified


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(DataError, match="unknown dataset 'mnist'; expected one of digits, digits-binary, objects"):
        load_dataset("mnist")
    assert dataset_info("digits_binary").name == "digits-binary"
