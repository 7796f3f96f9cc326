"""chainrule.sklearn: MLPClassifier and MLPRegressor pass scikit-learn's estimator
checks, work in Pipeline / cross_val_score / GridSearchCV, and keep up with
scikit-learn's own MLPClassifier on the digits."""

import importlib.util
import pickle
import time
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from chainrule.data import load_digits, train_test_split  # noqa: E402
from chainrule.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(autouse=True)
def one_blas_thread():
    """These networks are tiny: BLAS threads only cost time on a busy 2-core machine."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits()
    return train_test_split(X, y, test_size=0.25, seed=0)


def expected_failed_checks(estimator):
    """Checks expected to fail, by name, with the reason: none do.

    scikit-learn 1.9 skips a few checks by itself here, which is not a failure
    of ours: the pandas-input checks when pandas is not installed, the
    array-API checks unless SCIPY_ARRAY_API is set, and the decision_function
    check (the estimators offer predict_proba, not decision_function). Sparse
    input is refused with scikit-learn's own TypeError (tags: sparse=False).
    """
    return {}


@parametrize_with_checks(
    [MLPClassifier(max_iter=100, random_state=0), MLPRegressor(max_iter=100, random_state=0)],
    expected_failed_checks=expected_failed_checks,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ---- against scikit-learn's MLPClassifier --------------------------------------------


@pytest.mark.slow
def test_digits_accuracy_at_least_level_with_sklearn(digits):
    from sklearn.neural_network import MLPClassifier as SkMLPClassifier

    Xtr, Xte, ytr, yte = digits
    results = {}
    for name, cls in (("chainrule", MLPClassifier), ("scikit-learn", SkMLPClassifier)):
        start = time.perf_counter()
        clf = cls(hidden_layer_sizes=(100,), random_state=0).fit(Xtr, ytr)
        seconds = time.perf_counter() - start
        results[name] = clf.score(Xte, yte)
        print(f"{name:>12}: test accuracy {results[name]:.4f}, fit {seconds:.2f} s, {clf.n_iter_} epochs")
    # measured over random_state 0..9 (same defaults: adam, lr 1e-3, batch 200, 200 epochs):
    # chainrule minus scikit-learn from -0.0022 to +0.0089, mean +0.0033; seed 0: 0.9800 vs 0.9733
    assert results["chainrule"] >= results["scikit-learn"] - 0.01
    assert results["chainrule"] >= 0.97


# ---- the scikit-learn toolbox -----------------------------------------------------------


def test_pipeline_cross_val_score_and_grid_search(digits):
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    Xtr, Xte, ytr, yte = digits
    X, y = Xtr[:400], ytr[:400]
    pipe = make_pipeline(StandardScaler(), MLPClassifier((32,), activation="elu", max_iter=20, learning_rate_init=0.01, random_state=0))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.85  # measured 0.90-0.93

    grid = GridSearchCV(pipe, {"mlpclassifier__activation": ["prelu", "sigmoid"], "mlpclassifier__alpha": [1e-4, 1e-2]}, cv=2)
    grid.fit(X, y)
    assert len(grid.cv_results_["params"]) == 4
    assert grid.best_params_["mlpclassifier__activation"] in ("prelu", "sigmoid")
    assert grid.score(Xte, yte) > 0.85
    assert grid.best_estimator_[-1].n_features_in_ == 64


def test_clone_get_params_set_params():
    clf = MLPClassifier((16, 8), activation="leaky_relu", solver="sgd", label_smoothing=0.1, random_state=3)
    params = clf.get_params()
    assert params["hidden_layer_sizes"] == (16, 8) and params["label_smoothing"] == 0.1 and params["device"] == "cpu"
    copy = clone(clf)
    assert copy.get_params() == params and copy is not clf
    assert clf.set_params(alpha=0.5) is clf and clf.alpha == 0.5
    # nothing is checked or computed in __init__ or set_params: a bad value fails at fit, by name
    bad = MLPRegressor(activation="swish")
    with pytest.raises(ValueError, match="unknown activation 'swish'; expected one of"):
        bad.fit(np.zeros((4, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="learning_rate_init"):
        MLPClassifier(learning_rate_init=0).fit(np.zeros((4, 2)), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda', got 'tpu'"):
        MLPClassifier(device="tpu").fit(np.zeros((4, 2)), [0, 1, 0, 1])
    if importlib.util.find_spec("cupy") is None:  # no GPU here: the error says what is missing
        with pytest.raises(ValueError, match="CuPy"):
            MLPClassifier(device="cuda").fit(np.zeros((4, 2)), [0, 1, 0, 1])
    with pytest.raises(NotFittedError):
        MLPClassifier().predict(np.zeros((1, 2)))


# ---- what the estimators do -------------------------------------------------------------


@pytest.mark.parametrize("activation", ["sigmoid", "logistic", "tanh", "relu", "leaky_relu", "prelu", "elu", "gelu", "silu", "identity"])
def test_every_activation_learns_the_digits(digits, activation):
    Xtr, Xte, ytr, yte = digits
    clf = MLPClassifier((32,), activation=activation, max_iter=30, learning_rate_init=0.01, random_state=0).fit(Xtr[:600], ytr[:600])
    # measured: 0.909 (sigmoid) to 0.949 (prelu)
    assert clf.score(Xte, yte) > 0.88
    assert clf.n_iter_ == 30 and len(clf.loss_curve_) == 30 and clf.loss_curve_[-1] < clf.loss_curve_[0]
    assert clf.model_.activation == ("sigmoid" if activation == "logistic" else activation)


def test_string_labels_and_probabilities(digits):
    Xtr, Xte, ytr, yte = digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    clf = MLPClassifier((32,), max_iter=20, learning_rate_init=0.01, random_state=0).fit(Xtr[:600], names[ytr[:600]])
    assert list(clf.classes_) == sorted(names)
    pred = clf.predict(Xte)
    assert pred.dtype.kind == "U" and np.mean(pred == names[yte]) > 0.88
    proba = clf.predict_proba(Xte)
    assert proba.shape == (len(Xte), 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], pred)
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(Xte)), proba, rtol=1e-10)


def test_multilabel_trains_one_sigmoid_per_label(digits):
    from sklearn.metrics import f1_score

    Xtr, Xte, ytr, yte = digits

    def labels(v):  # odd, five or more, prime: several can hold at once
        return np.stack([v % 2 == 1, v >= 5, np.isin(v, [2, 3, 5, 7])], axis=1).astype(int)

    clf = MLPClassifier((32,), max_iter=30, learning_rate_init=0.01, random_state=0).fit(Xtr[:600], labels(ytr[:600]))
    assert clf.out_activation_ == "logistic" and list(clf.classes_) == [0, 1, 2]
    pred, proba = clf.predict(Xte), clf.predict_proba(Xte)
    assert pred.shape == (len(Xte), 3) and set(np.unique(pred)) <= {0, 1}
    assert np.all((proba > 0) & (proba < 1))
    np.testing.assert_array_equal(pred, (proba > 0.5).astype(int))
    # measured micro-F1 0.930 (scikit-learn's MLPClassifier, same settings: 0.935)
    assert f1_score(labels(yte), pred, average="micro") > 0.9


def test_label_smoothing_lowers_confidence(digits):
    Xtr, _, ytr, _ = digits
    kw = dict(hidden_layer_sizes=(32,), max_iter=30, learning_rate_init=0.01, random_state=0)
    sharp = MLPClassifier(**kw).fit(Xtr[:600], ytr[:600]).predict_proba(Xtr[:600]).max(axis=1).mean()
    smooth = MLPClassifier(label_smoothing=0.2, **kw).fit(Xtr[:600], ytr[:600]).predict_proba(Xtr[:600]).max(axis=1).mean()
    # measured mean top probability 0.950 without smoothing, 0.740 with eps = 0.2 (the target's top is 0.82)
    assert sharp > 0.9 and smooth < 0.82


def test_alpha_is_sklearns_l2_penalty_on_the_loss():
    """One full-batch SGD step: alpha adds alpha/(2n) ||W||^2 to the loss and (alpha/n) W to the gradient of W only."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 3))
    y = (X[:, 0] > 0).astype(int)
    kw = dict(hidden_layer_sizes=(5,), solver="sgd", momentum=0.0, batch_size=20, max_iter=1, shuffle=False, learning_rate_init=1.0, random_state=0)
    alpha, n, lr = 2.0, 20, 1.0
    plain = MLPClassifier(alpha=0.0, **kw).fit(X, y)
    decay = MLPClassifier(alpha=alpha, **kw).fit(X, y)
    # same start and same data gradient, so the weights differ by -lr * alpha / n * W0 and the biases not at all
    w0_sq = 0.0
    for a, b in zip(plain.model_.linears, decay.model_.linears):
        np.testing.assert_array_equal(a.bias.data, b.bias.data)
        w0 = (b.weight.data.astype(np.float64) - a.weight.data) * (-n / (lr * alpha))
        w0_sq += float((w0**2).sum())
    assert w0_sq > 1.0
    np.testing.assert_allclose(decay.loss_curve_[0] - plain.loss_curve_[0], alpha / (2 * n) * w0_sq, rtol=1e-3)


def test_partial_fit_continues_training(digits):
    Xtr, Xte, ytr, yte = digits
    clf = MLPClassifier((32,), learning_rate_init=0.01, batch_size=20, random_state=0)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        clf.partial_fit(Xtr[:100], ytr[:100])
    for i in range(12):  # two passes over six chunks of 100 rows, one epoch (5 steps) per call
        part = slice(100 * (i % 6), 100 * (i % 6 + 1))
        clf.partial_fit(Xtr[part], ytr[part], classes=np.arange(10) if i == 0 else None)
    assert clf.n_iter_ == 12 and len(clf.loss_curve_) == 12 and len(clf.diagnostics_) == 12
    assert clf.loss_curve_[-1] < clf.loss_curve_[0] / 3  # measured: 2.29 -> 0.40
    assert clf.score(Xte, yte) > 0.8  # measured 0.847
    with pytest.raises(ValueError, match="not among classes_"):
        clf.partial_fit(Xtr[:5], ytr[:5] + 10)
    with pytest.raises(ValueError, match="features"):
        clf.partial_fit(Xtr[:5, :10], ytr[:5])

    reg = MLPRegressor((16,), learning_rate_init=0.01, random_state=0)
    for _ in range(3):
        reg.partial_fit(Xtr[:200], ytr[:200].astype(float))
    assert reg.n_iter_ == 3 and reg.predict(Xte).shape == (len(Xte),)


def test_early_stopping_keeps_the_best_validation_score(digits):
    Xtr, _, ytr, _ = digits
    clf = MLPClassifier((32,), early_stopping=True, validation_fraction=0.2, n_iter_no_change=5, learning_rate_init=0.01, max_iter=200, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # it stopped, so no warning
        clf.fit(Xtr, ytr)
    assert clf.n_iter_ < 200 and len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_) > 0.9
    # the best score came more than n_iter_no_change epochs before the end
    assert int(np.argmax(clf.validation_scores_)) < clf.n_iter_ - 5


def test_regressor_single_and_multi_output():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, (400, 2))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1] ** 2
    kw = dict(hidden_layer_sizes=(32, 32), activation="tanh", max_iter=100, learning_rate_init=0.01, random_state=0)
    reg = MLPRegressor(**kw).fit(X[:300], y[:300])
    assert reg.predict(X[300:]).shape == (100,) and reg.score(X[300:], y[300:]) > 0.98  # measured 0.996
    Y = np.c_[y, -y]
    reg2 = MLPRegressor(**kw).fit(X[:300], Y[:300])
    assert reg2.n_outputs_ == 2 and reg2.predict(X[300:]).shape == (100, 2) and reg2.score(X[300:], Y[300:]) > 0.98  # 0.993


def test_fitted_attributes_diagnostics_verbose_and_pickle(digits, capsys):
    Xtr, Xte, ytr, _ = digits
    clf = MLPClassifier((16, 16), activation="sigmoid", max_iter=3, random_state=0, verbose=True).fit(Xtr[:300], ytr[:300])
    out = capsys.readouterr().out
    assert "Iteration 1, loss = " in out and "Iteration 3, loss = " in out
    assert clf.n_features_in_ == 64 and clf.n_iter_ == 3 and clf.t_ == 900
    assert [lin.weight.shape for lin in clf.model_.linears] == [(64, 16), (16, 16), (16, 10)]
    assert len(clf.diagnostics_) == 3
    layers = clf.diagnostics_[-1]["layers"]
    assert [r["layer"] for r in layers] == [1, 2, 3]
    assert all(r["grad_norm"] > 0 for r in layers)
    assert layers[0]["saturated_fraction"] is not None  # sigmoid layers report saturation
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(Xte), clf.predict_proba(Xte))
    # the same random_state gives the same model
    twin = MLPClassifier((16, 16), activation="sigmoid", max_iter=3, random_state=0).fit(Xtr[:300], ytr[:300])
    assert twin.loss_curve_ == clf.loss_curve_


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_residual_normalized_dropout_networks_learn_and_predict_in_eval_mode(digits, norm):
    Xtr, Xte, ytr, yte = digits
    clf = MLPClassifier((32,) * 4, residual=True, norm=norm, dropout=0.1, max_iter=20, learning_rate_init=0.01, random_state=0)
    clf.fit(Xtr[:600], ytr[:600])
    # measured: 0.944 (batch) and 0.918 (layer)
    assert clf.score(Xte, yte) > 0.88
    assert (clf.model_.residual, clf.model_.norm, clf.model_.dropout) == (True, norm, 0.1)
    p = clf.predict_proba(Xte[:50])
    assert np.array_equal(p, clf.predict_proba(Xte[:50]))  # no dropout when predicting
    assert np.allclose(clf.predict_proba(Xte[:1]), p[:1], rtol=0, atol=1e-12)  # nor batch statistics
    assert clone(clf).get_params()["norm"] == norm


@pytest.mark.parametrize("params, message", [({"norm": "group"}, "unknown norm"), ({"dropout": 1.5}, "dropout must be"), ({"residual": "yes"}, "residual must be")])
def test_depth_options_are_checked_at_fit(digits, params, message):
    Xtr, _, ytr, _ = digits
    with pytest.raises(ValueError, match=message):
        MLPClassifier((8,), max_iter=1, **params).fit(Xtr[:50], ytr[:50])
