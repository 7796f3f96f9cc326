"""scikit-learn estimators built on chainrule: MLPClassifier and MLPRegressor.

They train a :class:`chainrule.nn.MLP` with :func:`chainrule.fit` and
:mod:`chainrule.optim`, and follow scikit-learn's conventions, so they drop
into ``Pipeline``, ``cross_val_score`` and ``GridSearchCV``:

    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from chainrule.sklearn import MLPClassifier
    >>> clf = make_pipeline(StandardScaler(), MLPClassifier((64,), activation="elu", random_state=0))
    >>> clf.fit(X_train, y_train).score(X_test, y_test)

Their parameters mean what scikit-learn's ``MLPClassifier``/``MLPRegressor``
parameters of the same name mean; what differs:

- ``activation`` takes all of chainrule's activations ("sigmoid", "tanh",
  "relu", "leaky_relu", "prelu", "elu", "gelu", "silu") and "identity"; "logistic" is accepted
  as scikit-learn's name for "sigmoid". PReLU's slopes are learned.
- ``init`` names chainrule's initializer (He for the ReLU family and Xavier
  otherwise, by default); ``label_smoothing`` (classifier), ``device``, ``residual``,
  ``norm`` and ``dropout`` are new.
- The solvers are "sgd" (with ``momentum``, not Nesterov) and "adam"; "lbfgs"
  is not offered, nor are learning-rate schedules.
- ``alpha`` is scikit-learn's L2 penalty, added to the loss:
  ``loss = data_loss + alpha / (2 n_batch) * sum_l ||W_l||^2`` over the weight
  matrices of each mini-batch of n_batch rows (biases and PReLU slopes are not
  penalised), so its gradient is ``(alpha / n_batch) W``. It is not the
  optimizers' ``weight_decay``, which would also decay biases and ignore n_batch.
- The data losses are scikit-learn's too: softmax cross-entropy for one label
  per sample (a binary problem uses two softmax outputs, which is the same
  model as one sigmoid), binary cross-entropy summed over labels and averaged
  over samples for a multi-label indicator matrix (one sigmoid per label), and
  half the mean squared error for regression. ``loss_curve_`` holds the
  per-epoch mean of the penalised loss, as scikit-learn's does.
- Training runs in float32 (chainrule's default); ``predict``,
  ``predict_proba`` and ``score`` evaluate the trained weights in float64, so
  a sample's output does not depend on which other rows share its batch.
- ``diagnostics_`` is new: the per-epoch, per-layer records of a
  :class:`chainrule.diagnostics.Monitor` that watched training (gradient norms,
  update ratios, dead and saturated units). To keep its cost small it measures
  the first step of each epoch; ``diagnostics_[-1]["layers"]`` is the last epoch.

This module imports scikit-learn when it is imported; ``import chainrule``
never imports it.
"""

from __future__ import annotations

import copy
import math
import numbers
import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning

from . import functional as F
from .backend import to_numpy
from .diagnostics import Monitor
from .memory import check_training_memory, estimate_training_memory
from .nn import ACTIVATIONS
from .nn.init import INITIALIZERS
from .nn.dropout import check_dropout
from .nn.mlp import check_norm
from .runs import TrainConfig, build
from .train import fit as _fit
from .train import TrainState
from .train import predict as _predict
from .validation import boolean, choice, integer, number

__all__ = ["MLPClassifier", "MLPRegressor"]

_SOLVERS = ("sgd", "adam")
_ALIASES = {"logistic": "sigmoid"}


class _StopRule:
    """fit callback: scikit-learn's stopping rule and early stopping, checked after each epoch.

    Without a validation set: stop once the training loss has failed to drop
    below (best loss - tol) for more than n_iter_no_change epochs in a row. With
    one: the same on the validation score (accuracy or R^2), which must rise
    above (best score + tol); the best weights are kept and restored at the end.
    """

    def __init__(self, est: "_BaseMLP", rows: int, validation: tuple | None, check: bool):
        self.est, self.rows, self.validation, self.check = est, rows, validation, check
        self.best_state: dict | None = None
        self.stopped = False

    def on_epoch_end(self, state: TrainState) -> None:
        est = self.est
        loss = state.record["loss"]
        est.loss_curve_.append(loss)
        est.n_iter_ += 1
        est.t_ += self.rows
        if est.verbose:
            print(f"Iteration {est.n_iter_}, loss = {loss:.8f}")
        if self.validation is not None:
            score = est._model_score(state.model, *self.validation)
            state.record["val_score"] = score
            est.validation_scores_.append(score)
            if est.verbose:
                print(f"Validation score: {score:f}")
            if score < est.best_validation_score_ + est.tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                self.best_state = {k: to_numpy(v).copy() for k, v in state.model.state_dict().items()}
        else:
            if loss > est.best_loss_ - est.tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            est.best_loss_ = min(est.best_loss_ if est.best_loss_ is not None else math.inf, loss)
        if self.check and est._no_improvement_count > est.n_iter_no_change:
            what = "Validation score" if self.validation is not None else "Training loss"
            if est.verbose:
                print(f"{what} did not improve more than tol={est.tol:f} for {est.n_iter_no_change} consecutive epochs. Stopping.")
            self.stopped = state.stop = True


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, checks, the training loop."""

    _task = ""  # "multiclass" or "multilabel" (set at fit), or "regression"

    def __init__(
        self,
        hidden_layer_sizes: Any = (100,),
        activation: str = "relu",
        *,
        init: str | None = None,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: Any = "auto",
        learning_rate_init: float = 0.001,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: bool = False,
        momentum: float = 0.9,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        device: str = "cpu",
        residual: bool = False,
        norm: str | None = None,
        dropout: float = 0.0,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.init = init
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.momentum = momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.device = device
        self.residual = residual
        self.norm = norm
        self.dropout = dropout

    # ---- parameter checks (at fit, never in __init__ or set_params) ---------------
    def _check_params(self) -> tuple:
        """(hidden sizes, activation name), after checking every parameter."""

        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"{name} must be {expected}, got {getattr(self, name)!r}")

        sizes = self.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, numbers.Integral) else sizes
        try:
            sizes = list(sizes)
        except TypeError:
            raise bad("hidden_layer_sizes", "an int or a sequence of positive ints") from None
        if any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in sizes):
            raise bad("hidden_layer_sizes", "an int or a sequence of positive ints")
        act = self.activation
        act = choice("activation", _ALIASES.get(act, act) if isinstance(act, str) else act, tuple(ACTIVATIONS), ValueError)
        if self.init is not None:
            choice("init", self.init, INITIALIZERS, ValueError)
        choice("solver", self.solver, _SOLVERS, ValueError)
        number("alpha", self.alpha, 0.0, error=ValueError)
        if not (isinstance(self.batch_size, str) and self.batch_size == "auto"):
            integer("batch_size", self.batch_size, 1, error=ValueError)
        number("learning_rate_init", self.learning_rate_init, 0, open_low=True, error=ValueError)
        integer("max_iter", self.max_iter, 1, error=ValueError)
        number("tol", self.tol, 0.0, error=ValueError)
        number("momentum", self.momentum, 0.0, 0.999, error=ValueError)
        number("validation_fraction", self.validation_fraction, 0.0, 1.0, open_low=True, open_high=True, error=ValueError)
        integer("n_iter_no_change", self.n_iter_no_change, 1, error=ValueError)
        if not isinstance(self.device, str) or self.device.lower().split(":")[0] not in ("cpu", "cuda", "gpu"):
            raise bad("device", "'cpu' or 'cuda'")
        boolean("residual", self.residual, error=ValueError)
        check_norm(self.norm)  # nn.MLP's rules; chainrule's errors are ValueErrors, as scikit-learn expects
        check_dropout(self.dropout)
        return [int(s) for s in sizes], act

    # ---- the pieces each estimator supplies --------------------------------------
    def _loss_fn(self, weights: list) -> Any:
        """The penalised training loss: data loss + alpha / (2 n_batch) * sum ||W||^2."""
        data_loss, alpha = self._data_loss(), float(self.alpha)

        def loss(out: Any, target: Any) -> Any:
            value = data_loss(out, target)
            if alpha:
                penalty = None
                for w in weights:
                    sq = (w * w).sum()
                    penalty = sq if penalty is None else penalty + sq
                value = value + penalty * (alpha / (2 * out.data.shape[0]))
            return value

        return loss

    def _data_loss(self) -> Any:
        raise NotImplementedError

    def _model_score(self, model: Any, X: np.ndarray, y: np.ndarray) -> float:
        raise NotImplementedError

    # ---- training ----------------------------------------------------------------
    def _build(self, n_features: int, n_outputs: int, rng: np.random.RandomState) -> None:
        sizes, act = self._check_params()
        batch = 200 if self.batch_size == "auto" else int(self.batch_size)  # at most: "auto" is min(200, rows)
        estimate = estimate_training_memory([n_features, *sizes, n_outputs], batch, self.solver)
        check_training_memory(estimate, f"{type(self).__name__}(hidden_layer_sizes={tuple(sizes)})")
        config = TrainConfig(  # the run builder's settings; the loss is the estimator's own (_loss_fn)
            layers=sizes, activation=act, init=self.init, seed=int(rng.randint(2**31 - 1)), residual=bool(self.residual),
            norm=self.norm, dropout=self.dropout, optimizer=self.solver, lr=self.learning_rate_init,
            momentum=self.momentum, device=self.device,
        )
        built = build(config.resolved(), n_features, n_outputs)  # the same weights on any device; fit moves each batch to them
        self.model_, self._optimizer = built.model, built.optimizer
        self._seed = int(rng.randint(2**31 - 1))
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_curve_ = []
        self.best_loss_ = math.inf
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -math.inf
            self.best_loss_ = None  # as scikit-learn: the validation score rules instead
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None

    def _train(self, X: np.ndarray, y: np.ndarray, incremental: bool) -> None:
        """Run cr.fit for max_iter epochs (fit) or one (partial_fit) on checked, encoded data."""
        self._check_params()
        rng = self._rng
        validation = None
        if self.early_stopping and not incremental:
            X, y, validation = self._split_validation(X, y, rng)
        n = len(X)
        batch = min(200, n) if self.batch_size == "auto" else min(int(self.batch_size), n)
        weights = [lin.weight for lin in self.model_.linears]
        loss_fn = self._loss_fn(weights)
        rule = _StopRule(self, n, validation, check=not incremental)
        monitor = Monitor(monitor_every=(n + batch - 1) // batch, probe=X[:256], probe_targets=y[:256])
        start = self.n_iter_
        epochs = start + (1 if incremental else int(self.max_iter))
        try:
            _fit(
                self.model_,
                loss_fn,
                self._optimizer,
                X,
                y,
                epochs=epochs,
                batch_size=batch,
                seed=self._seed,
                callbacks=[rule, monitor],
                progress=False,
                task=self._task,
                shuffle=bool(self.shuffle),
                state=TrainState(epoch=start, step=start * ((n + batch - 1) // batch)),
            )
        finally:
            monitor.end()  # unhooks the layers even when training fails
        if not incremental or not hasattr(self, "diagnostics_"):
            self.diagnostics_ = []
        self.diagnostics_.extend(monitor.records)
        if rule.best_state is not None:
            self.model_.load_state_dict(rule.best_state)
        if not incremental and not rule.stopped and self.n_iter_ - start == self.max_iter:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the optimization hasn't converged yet.",
                ConvergenceWarning,
            )

    def _split_validation(self, X: np.ndarray, y: np.ndarray, rng: np.random.RandomState) -> tuple:
        from sklearn.model_selection import train_test_split

        stratify = None
        if self._task == "multiclass":
            _, counts = np.unique(y, return_counts=True)
            stratify = y if counts.min() >= 2 else None
        try:
            X, Xv, y, yv = train_test_split(X, y, test_size=self.validation_fraction, random_state=rng, stratify=stratify)
        except ValueError:  # too few rows per class for a stratified split
            X, Xv, y, yv = train_test_split(X, y, test_size=self.validation_fraction, random_state=rng)
        if len(X) == 0 or len(Xv) == 0:
            raise ValueError(
                f"early_stopping needs at least one training and one validation sample; validation_fraction="
                f"{self.validation_fraction} of {len(X) + len(Xv)} samples leaves {len(X)} and {len(Xv)}"
            )
        return X, y, (Xv, yv)

    def _outputs64(self, X: Any) -> np.ndarray:
        """The network's outputs on X, evaluated with float64 copies of the weights."""
        from sklearn.utils.validation import check_is_fitted, validate_data

        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        model = copy.deepcopy(self.model_).double()
        return _predict(model, X)

    def _rng_for_fit(self) -> np.random.RandomState:
        """A RandomState for the weights, batch order and validation split (an int gives a fresh one per fit)."""
        from sklearn.utils import check_random_state

        return check_random_state(self.random_state)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier trained by chainrule (scikit-learn API).

    One label per sample (binary or multiclass, labels of any type, strings
    too) trains a softmax output with cross-entropy; a binary indicator matrix
    (multi-label) trains one sigmoid per label with binary cross-entropy.

    Args:
        hidden_layer_sizes: widths of the hidden layers, e.g. ``(128, 64)``.
        activation: "sigmoid" (or "logistic"), "tanh", "relu", "leaky_relu",
            "prelu", "elu", "gelu", "silu" or "identity".
        init: weight initializer name, or None for He (ReLU family) / Xavier (others).
        solver: "adam" or "sgd".
        alpha: L2 penalty, ``alpha / (2 n_batch) * sum ||W||^2`` added to the loss.
        batch_size: rows per step; "auto" is min(200, n_samples).
        learning_rate_init: the optimizer's learning rate.
        max_iter: most epochs (passes over the data) in ``fit``.
        shuffle: shuffle the rows at each epoch.
        random_state: int for repeatable weights, batches and validation split.
        tol, n_iter_no_change: stop when the training loss (or, with early
            stopping, the validation accuracy) has not improved by tol for more
            than n_iter_no_change epochs in a row.
        verbose: print the loss after each epoch.
        momentum: SGD momentum, in [0, 0.999].
        early_stopping: hold out ``validation_fraction`` of the data
            (stratified), stop on its accuracy and keep the best weights.
        label_smoothing: eps in [0, 1]; the one-hot target becomes
            ``(1 - eps) onehot + eps / C`` (multi-label: ``(1 - eps) y + eps / 2``).
        device: "cpu" or "cuda" (CuPy and an NVIDIA GPU; the error says which is missing).
        residual, norm, dropout: a skip connection around each hidden block of equal width,
            None, "batch" or "layer" normalization after each hidden Linear, and the dropout
            probability after each hidden activation (see :class:`chainrule.nn.MLP`); ``predict``
            runs the network in evaluation mode (running statistics, no dropout).

    Fitted attributes: ``classes_``, ``n_features_in_`` (and
    ``feature_names_in_``), ``n_outputs_``, ``out_activation_`` ("softmax" or
    "logistic"), ``loss_curve_``, ``n_iter_``, ``t_`` (samples seen),
    ``best_loss_``, ``validation_scores_`` and ``best_validation_score_`` (with
    early stopping), ``model_`` (the trained :class:`chainrule.nn.MLP`, whose
    outputs are logits) and ``diagnostics_`` (per-layer records).

    Example:
        >>> clf = MLPClassifier((64,), activation="prelu", random_state=0).fit(X, y)
        >>> clf.predict_proba(X[:2]).round(2)
    """

    def __init__(
        self,
        hidden_layer_sizes: Any = (100,),
        activation: str = "relu",
        *,
        init: str | None = None,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: Any = "auto",
        learning_rate_init: float = 0.001,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: bool = False,
        momentum: float = 0.9,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        label_smoothing: float = 0.0,
        device: str = "cpu",
        residual: bool = False,
        norm: str | None = None,
        dropout: float = 0.0,
    ):
        super().__init__(
            hidden_layer_sizes,
            activation,
            init=init,
            solver=solver,
            alpha=alpha,
            batch_size=batch_size,
            learning_rate_init=learning_rate_init,
            max_iter=max_iter,
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            momentum=momentum,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
            device=device,
            residual=residual,
            norm=norm,
            dropout=dropout,
        )
        self.label_smoothing = label_smoothing

    def _check_params(self) -> tuple:
        ls = self.label_smoothing
        if isinstance(ls, bool) or not isinstance(ls, numbers.Real) or not 0.0 <= ls <= 1.0:
            raise ValueError(f"label_smoothing must be a number in [0, 1], got {ls!r}")
        return super()._check_params()

    def _data_loss(self) -> Any:
        eps = float(self.label_smoothing)
        if self._task == "multilabel":

            def bce(out: Any, target: Any) -> Any:
                t = target.data if eps == 0 else target.data * (1 - eps) + eps / 2
                return F.binary_cross_entropy_with_logits(out, t, reduction="sum") * (1.0 / out.data.shape[0])

            return bce
        return lambda out, target: F.cross_entropy(out, target, label_smoothing=eps)

    def _model_score(self, model: Any, X: np.ndarray, y: np.ndarray) -> float:
        out = _predict(model, X)
        if self._task == "multilabel":
            return float(np.mean(np.all((out > 0) == (y >= 0.5), axis=1)))
        return float(np.mean(out.argmax(axis=1) == y))

    def _encode(self, X: Any, y: Any, reset: bool) -> tuple:
        """Checked float32 X and y as class indices (or a float indicator matrix), with classes_ set on reset."""
        from sklearn.utils.multiclass import check_classification_targets, type_of_target
        from sklearn.utils.validation import column_or_1d, validate_data

        X, y = validate_data(self, X, y, reset=reset, multi_output=True, dtype=(np.float64, np.float32))
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        kind = type_of_target(y)
        if kind == "multilabel-indicator":
            task, labels = "multilabel", np.arange(y.shape[1])
        elif kind in ("binary", "multiclass"):
            task, labels = "multiclass", np.unique(y)
        else:
            raise ValueError(f"MLPClassifier supports binary, multiclass and multi-label indicator targets, got {kind} y")
        if reset:
            self._task, self.classes_ = task, labels
        elif task != self._task:
            raise ValueError(f"y is {kind} but the classifier was fitted on {self._task} targets")
        if task == "multilabel":
            if y.shape[1] != len(self.classes_):
                raise ValueError(f"y has {y.shape[1]} labels but the classifier was fitted on {len(self.classes_)}")
            return X.astype(np.float32), np.asarray(y, dtype=np.float32)
        unseen = np.setdiff1d(labels, self.classes_)
        if len(unseen):
            raise ValueError(f"y holds labels {unseen.tolist()} that are not among classes_ {self.classes_.tolist()}")
        return X.astype(np.float32), np.searchsorted(self.classes_, y).astype(np.int64)

    def fit(self, X: Any, y: Any) -> "MLPClassifier":
        """Train a new network on (X, y) for up to max_iter epochs; returns self."""
        self._check_params()
        X, y = self._encode(X, y, reset=True)
        self._rng = self._rng_for_fit()
        self._start(X.shape[1])
        self._train(X, y, incremental=False)
        return self

    def _start(self, n_features: int) -> None:
        self.n_outputs_ = len(self.classes_)
        self.out_activation_ = "logistic" if self._task == "multilabel" else "softmax"
        self._build(n_features, self.n_outputs_, self._rng)

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> "MLPClassifier":
        """One epoch over (X, y), continuing from the current weights and optimizer state.

        ``classes`` (every label that will ever occur) is required on the
        first call, unless y is a multi-label indicator matrix. Early stopping
        and the stopping rule do not apply here.
        """
        from sklearn.utils.multiclass import type_of_target

        first = not hasattr(self, "model_")
        if first:
            self._check_params()
            if classes is None and type_of_target(y) != "multilabel-indicator":
                raise ValueError("classes must be passed on the first call to partial_fit (every label that will occur)")
            X, y = self._encode(X, y, reset=True)
            if classes is not None and self._task == "multiclass":
                given = np.unique(np.asarray(classes))
                unseen = np.setdiff1d(self.classes_, given)
                if len(unseen):
                    raise ValueError(f"y holds labels {unseen.tolist()} that are not in classes={given.tolist()}")
                y = np.searchsorted(given, self.classes_[y]).astype(np.int64)
                self.classes_ = given
            self._rng = self._rng_for_fit()
            self._start(X.shape[1])
        else:
            if classes is not None and not np.array_equal(np.unique(np.asarray(classes)), self.classes_):
                raise ValueError(f"classes={list(classes)} differs from classes_={self.classes_.tolist()} of the first call")
            X, y = self._encode(X, y, reset=False)
        self._train(X, y, incremental=True)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """The most likely class of each row (multi-label: a 0/1 row, a label on where its probability > 0.5)."""
        out = self._outputs64(X)
        if self._task == "multilabel":
            return (out > 0).astype(np.int64)
        return self.classes_[out.argmax(axis=1)]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, (n_samples, n_classes): softmax rows, or per-label sigmoids for multi-label."""
        out = self._outputs64(X)
        if self._task == "multilabel":
            return 1.0 / (1.0 + np.exp(-out))
        e = np.exp(out - out.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log of predict_proba, computed stably (log-softmax or log-sigmoid)."""
        out = self._outputs64(X)
        if self._task == "multilabel":
            return -np.logaddexp(0.0, -out)
        shifted = out - out.max(axis=1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor trained by chainrule (scikit-learn API).

    Minimises half the mean squared error (plus the ``alpha`` penalty) with an
    identity output; y may be (n_samples,) or (n_samples, n_targets).

    Args: those of :class:`MLPClassifier` without ``label_smoothing``; with
    early stopping the validation score is R^2.

    Fitted attributes: ``n_features_in_``, ``n_outputs_``, ``loss_curve_``,
    ``n_iter_``, ``t_``, ``best_loss_``, ``validation_scores_``,
    ``best_validation_score_``, ``model_`` and ``diagnostics_``.

    Example:
        >>> reg = MLPRegressor((64, 64), activation="tanh", random_state=0).fit(X, y)
        >>> reg.score(X, y)
    """

    _task = "regression"

    def _data_loss(self) -> Any:
        return lambda out, target: F.mse_loss(out, target) * 0.5

    def _model_score(self, model: Any, X: np.ndarray, y: np.ndarray) -> float:
        from sklearn.metrics import r2_score

        return float(r2_score(y, _predict(model, X)))

    def _encode(self, X: Any, y: Any, reset: bool) -> tuple:
        from sklearn.utils.validation import column_or_1d, validate_data

        X, y = validate_data(self, X, y, reset=reset, multi_output=True, y_numeric=True, dtype=(np.float64, np.float32))
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if reset:
            self._y_1d = y.ndim == 1
            self.n_outputs_ = 1 if y.ndim == 1 else y.shape[1]
        y2 = y.reshape(len(y), -1)
        if y2.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {y2.shape[1]} targets but the regressor was fitted on {self.n_outputs_}")
        return X.astype(np.float32), y2.astype(np.float32)

    def fit(self, X: Any, y: Any) -> "MLPRegressor":
        """Train a new network on (X, y) for up to max_iter epochs; returns self."""
        self._check_params()
        X, y = self._encode(X, y, reset=True)
        self._rng = self._rng_for_fit()
        self._build(X.shape[1], self.n_outputs_, self._rng)
        self._train(X, y, incremental=False)
        return self

    def partial_fit(self, X: Any, y: Any) -> "MLPRegressor":
        """One epoch over (X, y), continuing from the current weights and optimizer state."""
        first = not hasattr(self, "model_")
        if first:
            self._check_params()
        X, y = self._encode(X, y, reset=first)
        if first:
            self._rng = self._rng_for_fit()
            self._build(X.shape[1], self.n_outputs_, self._rng)
        self._train(X, y, incremental=True)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted values: (n_samples,) when fitted on a 1-D y, else (n_samples, n_targets)."""
        out = self._outputs64(X)
        return out[:, 0] if self._y_1d else out

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
