r"""scikit-learn estimators trained by calcml: ``MLPClassifier``, ``MLPRegressor``,
``LinearRegression``.

They follow scikit-learn's contract (and pass its ``parametrize_with_checks``): ``__init__``
only stores its keyword arguments; ``fit`` validates the input, trains and returns ``self``;
fitted attributes end in ``_``; ``get_params``/``set_params``, ``score``, cloning and
pipelines come from :class:`sklearn.base.BaseEstimator` and the mixins.

Training goes through calcml's own pieces: a :mod:`calcml.nn` network, a loss of
:mod:`calcml.losses`, an optimizer of :mod:`calcml.optim` and the loop :func:`calcml.train`
(mini-batches from an explicit generator seeded by ``random_state``, the non-finite guard,
early stopping).  The fitted weights are stored as plain NumPy arrays (``coefs_``,
``intercepts_``, scikit-learn's layout), so a fitted estimator holds no graph and pickles
like any scikit-learn estimator; ``to_module()`` rebuilds the :mod:`calcml.nn` network.

Inputs are not standardised inside the estimators (as in scikit-learn, whose MLPs are also
sensitive to feature scaling): put a ``StandardScaler`` in front of them in a ``Pipeline``.
``LinearRegression`` is the exception, because there scaling is part of the *solver*: it runs
gradient descent on standardised features (a diagonal preconditioner; the condition number of
the correlation matrix, not of the raw design, sets the rate) and maps the solution back, so
its ``coef_`` and ``intercept_`` are those of the original features.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from . import losses, nn, optim
from . import ops as _ops
from . import train as _train

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    def _validate_data(est, X="no_validation", y="no_validation", reset=True, **kw):
        return est._validate_data(X, y, reset=reset, **kw)

__all__ = ["MLPClassifier", "MLPRegressor", "LinearRegression"]

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "logistic": nn.Sigmoid,
                "identity": nn.Identity}


def _np_activation(name, z):
    if name == "relu":
        return np.maximum(z, 0.0, out=z)
    if name == "tanh":
        return np.tanh(z, out=z)
    if name == "logistic":  # σ(z) = (1 + tanh(z/2))/2: no overflow for any z
        return 0.5 * (1.0 + np.tanh(0.5 * z))
    return z


def _generator(random_state):
    """A ``numpy.random.Generator`` from scikit-learn's ``random_state`` conventions."""
    if random_state is None:
        return np.random.default_rng()
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, numbers.Integral):
        return np.random.default_rng(int(random_state))
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(int(random_state.randint(2**31 - 1)))
    raise ValueError(f"random_state must be None, an int, a numpy RandomState or Generator; "
                     f"got {random_state!r}")


def _float_dtype(name, dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt not in (np.float32, np.float64):
        raise ValueError(f"{name}: dtype must be float32 or float64, got {dtype!r}")
    return dt


def _check_number(name, what, value, low=None, high=None, low_open=False, integer=False):
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or (
            not integer and not math.isfinite(value)):
        raise ValueError(f"{name}: {what} must be a{'n integer' if integer else ' real number'}"
                         f", got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name}: {what} must be {'>' if low_open else '>='} {low}, got "
                         f"{value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name}: {what} must be <= {high}, got {value!r}")


class _GradientTolerance(_train.Callback):
    """Stop when every entry of every gradient is at most ``tol`` in absolute value."""

    def __init__(self, tol):
        self.tol = tol
        self.converged = False

    def on_batch_end(self, run, batch, logs):
        g = max(float(np.max(np.abs(p.grad))) for p in run.optimizer.params)
        if g <= self.tol:
            self.converged = True
            run.stop_training = True


# =========================================================================================
# multi-layer perceptrons
# =========================================================================================

class _BaseMLP(BaseEstimator):
    """Shared fitting of the MLPs; subclasses set the output layer and the loss."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=1e-4, batch_size="auto", learning_rate_init=1e-3, max_iter=200,
                 tol=1e-4, n_iter_no_change=10, early_stopping=False,
                 validation_fraction=0.1, momentum=0.9, nesterovs_momentum=True,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, shuffle=True, random_state=None,
                 dtype=np.float64, verbose=False):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.shuffle = shuffle
        self.random_state = random_state
        self.dtype = dtype
        self.verbose = verbose

    # --- parameters -----------------------------------------------------------------------
    def _hidden(self):
        name = type(self).__name__
        h = self.hidden_layer_sizes
        if isinstance(h, numbers.Integral) and not isinstance(h, bool):
            h = (h,)
        try:
            h = tuple(h)
        except TypeError:
            raise ValueError(f"{name}: hidden_layer_sizes must be a tuple of positive "
                             f"integers, got {self.hidden_layer_sizes!r}") from None
        if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0
                   for s in h):
            raise ValueError(f"{name}: hidden_layer_sizes must be a tuple of positive "
                             f"integers, got {self.hidden_layer_sizes!r}")
        return tuple(int(s) for s in h)

    def _check_params(self):
        name = type(self).__name__
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"{name}: activation must be one of {sorted(_ACTIVATIONS)}, got "
                             f"{self.activation!r}")
        if self.solver not in ("adam", "sgd"):
            raise ValueError(f"{name}: solver must be 'adam' or 'sgd', got {self.solver!r}")
        _check_number(name, "alpha", self.alpha, low=0.0)
        _check_number(name, "learning_rate_init", self.learning_rate_init, low=0.0,
                      low_open=True)
        _check_number(name, "max_iter", self.max_iter, low=1, integer=True)
        _check_number(name, "tol", self.tol, low=0.0)
        _check_number(name, "n_iter_no_change", self.n_iter_no_change, low=1, integer=True)
        _check_number(name, "validation_fraction", self.validation_fraction, low=0.0,
                      high=1.0, low_open=True)
        if self.validation_fraction >= 1.0:
            raise ValueError(f"{name}: validation_fraction must be < 1, got "
                             f"{self.validation_fraction!r}")
        _check_number(name, "momentum", self.momentum, low=0.0, high=1.0)
        _check_number(name, "beta_1", self.beta_1, low=0.0, high=1.0)
        _check_number(name, "beta_2", self.beta_2, low=0.0, high=1.0)
        if self.beta_1 >= 1 or self.beta_2 >= 1:
            raise ValueError(f"{name}: beta_1 and beta_2 must be < 1")
        _check_number(name, "epsilon", self.epsilon, low=0.0, low_open=True)
        if self.batch_size != "auto":
            _check_number(name, "batch_size", self.batch_size, low=1, integer=True)
        return self._hidden(), _float_dtype(name, self.dtype)

    # --- the network ----------------------------------------------------------------------
    def _build(self, sizes, dtype, gen):
        init = "he_uniform" if self.activation == "relu" else "xavier_uniform"
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b, rng=gen, dtype=dtype, init=init))
            if i < len(sizes) - 2:
                layers.append(_ACTIVATIONS[self.activation]())
        return nn.Sequential(*layers)

    def to_module(self):
        """The fitted network as a :class:`calcml.nn.Sequential` (Linear and activation
        layers; the output layer gives logits for the classifier)."""
        check_is_fitted(self)
        sizes = [self.coefs_[0].shape[0]] + [c.shape[1] for c in self.coefs_]
        model = self._build(sizes, self.coefs_[0].dtype, np.random.default_rng(0))
        linear = [m for m in model if isinstance(m, nn.Linear)]
        for lin, W, b in zip(linear, self.coefs_, self.intercepts_):
            lin.weight.data[...] = W.T
            lin.bias.data[...] = b
        return model

    def _forward(self, X):
        """The output layer's pre-activations (logits), in NumPy."""
        a = X
        last = len(self.coefs_) - 1
        for i, (W, b) in enumerate(zip(self.coefs_, self.intercepts_)):
            a = a @ W + b
            if i < last:
                a = _np_activation(self.activation, a)
        return a

    def _fit_network(self, X, Y, base_loss, stratify):
        """Train on (X, Y) (Y: encoded labels or targets of shape (n, outputs))."""
        hidden, dtype = self._check_params()
        X = X.astype(dtype, copy=False)
        gen = _generator(self.random_state)
        n_out = self._n_outputs(Y)
        model = self._build((X.shape[1], *hidden, n_out), dtype, gen)
        weights = [m.weight for m in model if isinstance(m, nn.Linear)]
        alpha = float(self.alpha)

        def loss(yb, out):  # scikit-learn's objective: data term + α/(2 n_batch) Σ‖W‖²
            value = base_loss(yb, out)
            if alpha > 0:
                penalty = _ops.sum(_ops.stack([_ops.sum(w * w) for w in weights]))
                value = value + penalty * (0.5 * alpha / len(yb))
            return value

        if self.solver == "adam":
            transform = optim.adam(self.learning_rate_init, self.beta_1, self.beta_2,
                                   self.epsilon)
        else:
            transform = optim.sgd(self.learning_rate_init, self.momentum,
                                  nesterov=bool(self.nesterovs_momentum and self.momentum > 0))
        validation = None
        if self.early_stopping:
            seed = int(gen.integers(2**31 - 1))
            X, Xv, Y, Yv = train_test_split(X, Y, test_size=self.validation_fraction,
                                            random_state=seed, stratify=stratify(Y))
            validation = (Xv, Yv)
        n = len(X)
        batch = min(200, n) if self.batch_size == "auto" else min(int(self.batch_size), n)
        stopper = _train.EarlyStopping(
            monitor="val_loss" if self.early_stopping else "loss",
            patience=int(self.n_iter_no_change), min_delta=float(self.tol),
            restore_best_weights=bool(self.early_stopping))
        history = _train.train(model, loss, transform, X, Y, epochs=int(self.max_iter),
                               batch_size=batch, validation_data=validation,
                               shuffle=bool(self.shuffle), rng=gen, early_stopping=stopper,
                               progress=bool(self.verbose))
        linear = [m for m in model if isinstance(m, nn.Linear)]
        self.coefs_ = [np.array(m.weight.data.T) for m in linear]
        self.intercepts_ = [np.array(m.bias.data) for m in linear]
        self.n_layers_ = len(linear) + 1
        self.n_iter_ = len(history)
        self.loss_curve_ = list(history.train_loss)
        self.loss_ = self.loss_curve_[-1]
        self.best_loss_ = None if self.early_stopping else float(np.min(self.loss_curve_))
        self.validation_loss_curve_ = list(history.val_loss) if self.early_stopping else None
        self.t_ = self.n_iter_ * n
        if history.stop_reason is None and self.n_iter_ == self.max_iter:
            warnings.warn(f"{type(self).__name__}: the optimizer did not converge within "
                          f"max_iter={self.max_iter} epochs (tol={self.tol}); increase "
                          f"max_iter", ConvergenceWarning, stacklevel=3)
        return self

    def _X(self, X):
        check_is_fitted(self)
        X = _validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return X.astype(self.coefs_[0].dtype, copy=False)


class MLPClassifier(ClassifierMixin, _BaseMLP):
    r"""A multi-layer perceptron classifier trained by calcml (softmax cross-entropy).

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default (100,)
        The widths of the hidden layers.
    activation : {"relu", "tanh", "logistic", "identity"}, default "relu"
    solver : {"adam", "sgd"}, default "adam"
        ``cm.optim.adam(learning_rate_init, beta_1, beta_2, epsilon)`` or
        ``cm.optim.sgd(learning_rate_init, momentum, nesterov=nesterovs_momentum)``.
    alpha : float, default 1e-4
        L2 penalty: the objective of a batch of size B is the mean cross-entropy plus
        α/(2B) Σ‖W‖² over the weight matrices (not the biases), as in scikit-learn.
    batch_size : int or "auto", default "auto" (= min(200, n_samples))
    learning_rate_init : float, default 1e-3
    max_iter : int, default 200
        The maximum number of epochs.
    tol, n_iter_no_change : float, int
        Stop when the monitored loss (training loss, or validation loss with
        ``early_stopping``) has not improved by more than ``tol`` for ``n_iter_no_change``
        epochs.
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the data (stratified), monitor the validation
        loss and end with the weights of the best epoch.
    validation_fraction : float, default 0.1
    momentum, nesterovs_momentum : for ``solver="sgd"``
    beta_1, beta_2, epsilon : for ``solver="adam"``
    shuffle : bool, default True
    random_state : int, RandomState, Generator or None
        Seeds the initial weights (He-uniform for relu, Glorot-uniform otherwise, zero
        biases), the validation split and the mini-batches.
    dtype : float64 or float32
        Of the network and the computation.
    verbose : bool
        Show a progress bar.

    Attributes
    ----------
    classes_ : array of the class labels
    coefs_ : list of arrays (n_in, n_out), intercepts_ : list of arrays (n_out,)
        The fitted layers (scikit-learn's layout; ``to_module()`` gives the network).
    n_features_in_, feature_names_in_, n_iter_, loss_curve_, loss_, best_loss_,
    validation_loss_curve_, n_layers_, n_outputs_, out_activation_ ("softmax"), t_

    Notes
    -----
    The network has one output per class (two for a binary problem) and is trained on the
    softmax cross-entropy of the logits, ``cm.losses.cross_entropy``.  ``predict_proba`` is
    the softmax of the logits; ``predict`` its argmax.  Inputs are not scaled: use a
    ``Pipeline`` with a ``StandardScaler``.

    Examples
    --------
    >>> import numpy as np
    >>> from calcml.estimators import MLPClassifier
    >>> X = np.array([[0., 0.], [0., 1.], [1., 0.], [1., 1.]] * 10); y = [0, 1, 1, 0] * 10
    >>> clf = MLPClassifier((16,), activation="tanh", learning_rate_init=0.05, max_iter=300,
    ...                     random_state=0).fit(X, y)
    >>> clf.predict([[0., 1.], [1., 1.]])
    array([1, 0])
    """

    def _n_outputs(self, Y):
        return len(self.classes_)

    def fit(self, X, y):
        """Fit on ``X`` (n_samples, n_features) and class labels ``y``; returns ``self``."""
        self._check_params()  # before validate_data records anything about this fit
        X, y = _validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        classes, Y = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes in "
                             f"the data; got 1 class ({classes[0]!r})")
        self.classes_ = classes
        self.n_outputs_ = 1
        self.out_activation_ = "softmax"
        return self._fit_network(X, Y.astype(np.int64), losses.cross_entropy,
                                 stratify=lambda Y: Y)

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes): the softmax of the logits."""
        z = self._forward(self._X(X))
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X):
        """Log of :meth:`predict_proba`, computed stably (log-softmax)."""
        z = self._forward(self._X(X))
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def predict(self, X):
        """The class of highest probability for each row of ``X``."""
        z = self._forward(self._X(X))  # checks that the estimator is fitted first
        return self.classes_[np.argmax(z, axis=1)]


class MLPRegressor(RegressorMixin, _BaseMLP):
    r"""A multi-layer perceptron regressor trained by calcml (squared error).

    Parameters are those of :class:`MLPClassifier`.  The objective of a batch of size B is
    ½·mean((y - ŷ)²) summed over the outputs (scikit-learn's squared loss) plus
    α/(2B) Σ‖W‖²; the output layer is linear.  ``y`` may be 1-d or 2-d (several targets);
    ``predict`` returns the same number of dimensions as the ``y`` of ``fit``.  ``early_stopping``
    holds out a random (unstratified) validation set.

    Attributes
    ----------
    coefs_, intercepts_, n_features_in_, n_iter_, loss_curve_, loss_, best_loss_,
    validation_loss_curve_, n_layers_, n_outputs_, out_activation_ ("identity"), t_

    Examples
    --------
    >>> import numpy as np
    >>> from calcml.estimators import MLPRegressor
    >>> X = np.linspace(-1, 1, 40)[:, None]; y = X.ravel() ** 2
    >>> reg = MLPRegressor((32,), learning_rate_init=0.01, max_iter=1000, n_iter_no_change=50,
    ...                    random_state=0).fit(X, y)
    >>> bool(reg.score(X, y) > 0.95)
    True
    """

    def _n_outputs(self, Y):
        return Y.shape[1]

    def fit(self, X, y):
        """Fit on ``X`` (n_samples, n_features) and targets ``y`` (n_samples,) or
        (n_samples, n_targets); returns ``self``."""
        self._check_params()  # before validate_data records anything about this fit
        X, y = _validate_data(self, X, y, dtype=[np.float64, np.float32], multi_output=True,
                              y_numeric=True)
        self._y_ndim = y.ndim
        Y = y.reshape(len(y), -1).astype(_float_dtype(type(self).__name__, self.dtype))
        self.n_outputs_ = Y.shape[1]
        self.out_activation_ = "identity"
        k = float(Y.shape[1])
        return self._fit_network(
            X, Y, lambda yb, out: losses.mse(yb, out) * (0.5 * k), stratify=lambda Y: None)

    def predict(self, X):
        """Predicted targets: shape (n_samples,) if ``fit`` had a 1-d ``y``, else
        (n_samples, n_targets)."""
        out = self._forward(self._X(X))
        return out.ravel() if self._y_ndim == 1 else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # fit accepts 2-d y (several targets)
        return tags


# =========================================================================================
# linear regression by gradient descent
# =========================================================================================

class LinearRegression(RegressorMixin, BaseEstimator):
    r"""Ordinary least squares, solved by the chapter's gradient methods through calcml.

    Parameters
    ----------
    fit_intercept : bool, default True
    solver : {"gd", "sgd"}, default "gd"
        ``"gd"``: full-batch gradient descent, θ ← θ - α ∇L(θ); ``"sgd"``: mini-batches of
        ``batch_size`` drawn from ``random_state``, with optional ``momentum``.  Both are
        ``cm.optim.sgd`` driven by :func:`calcml.train`.
    learning_rate : float or "auto", default "auto"
        ``"auto"``: α = 1/L for ``"gd"``, with L = 2 λ_max(ZᵀZ/n) the Lipschitz constant of
        ∇L on the standardised design Z (with its column of ones); for ``"sgd"`` with batches
        of B rows α = B/(L_max + (B-1) L), L_max = 2 max_i ‖z_i‖² the largest per-sample
        constant (Ma, Bassily and Belkin 2018: the largest step for which mini-batch SGD
        converges linearly when the data can be fitted exactly; 1/L_max for B = 1, 1/L for
        B = n).
    max_iter : int, default 1000
        The maximum number of epochs (= steps for ``"gd"``).
    tol : float, default 1e-8
        Stop when every entry of the gradient (of the standardised problem) is at most
        ``tol`` in absolute value.  For ``"sgd"`` it is the gradient of the last batch.
        Rounding bounds what a dtype can reach: the tolerance used is at least
        ``100 * finfo(dtype).eps`` (1.2e-5 in float32, 2.2e-14 in float64).
    batch_size : int, default 32
    momentum : float, default 0.0
    random_state : int, RandomState, Generator or None
        For ``"sgd"``'s mini-batches.
    dtype : float64 or float32
        The dtype of the training arithmetic and of ``predict``'s result.

    Attributes
    ----------
    coef_ : array (n_features,) or (n_targets, n_features)
    intercept_ : float or array (n_targets,)
    n_iter_ : int
        Epochs run.
    loss_curve_ : list of float
        The mean squared error of the standardised problem, per epoch.
    learning_rate_ : float
        The step size used.
    n_features_in_, feature_names_in_

    Notes
    -----
    The loss is L(w, b) = mean((Zw + b - t)²) with Z = (X - μ)/s the standardised features
    (μ the column means, or 0 without an intercept; s the column standard deviations, or
    root mean squares without an intercept; 1 for a constant column) and t = (y - ȳ)/σ_y.
    Gradient descent starts from zero and converges linearly at the rate 1 - μ/L set by the
    condition number of ZᵀZ (the correlation matrix), not of XᵀX: standardising is a
    diagonal preconditioner.  The solution is mapped back to the original units,
    ``coef_ = σ_y w / s`` and ``intercept_ = ȳ + σ_y b - μ·coef_``; it agrees with
    ``numpy.linalg.lstsq`` to the tolerance (a rank-deficient design gives the minimum-norm
    solution of the standardised problem, which predicts the same).  Without an intercept
    the columns can only be scaled, not centred, so features whose means are large compared
    with their spread leave the problem ill-conditioned and slow to converge.

    Examples
    --------
    >>> import numpy as np
    >>> from calcml.estimators import LinearRegression
    >>> X = np.array([[0., 1.], [1., 0.], [2., 3.], [3., 1.]]); y = X @ [2., -1.] + 0.5
    >>> reg = LinearRegression().fit(X, y)
    >>> np.round(reg.coef_, 6), round(float(reg.intercept_), 6)
    (array([ 2., -1.]), 0.5)
    """

    def __init__(self, *, fit_intercept=True, solver="gd", learning_rate="auto",
                 max_iter=1000, tol=1e-8, batch_size=32, momentum=0.0, random_state=None,
                 dtype=np.float64):
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.momentum = momentum
        self.random_state = random_state
        self.dtype = dtype

    def _check_params(self):
        name = type(self).__name__
        if self.solver not in ("gd", "sgd"):
            raise ValueError(f"{name}: solver must be 'gd' or 'sgd', got {self.solver!r}")
        if self.learning_rate != "auto":
            _check_number(name, "learning_rate", self.learning_rate, low=0.0, low_open=True)
        _check_number(name, "max_iter", self.max_iter, low=1, integer=True)
        _check_number(name, "tol", self.tol, low=0.0)
        _check_number(name, "batch_size", self.batch_size, low=1, integer=True)
        _check_number(name, "momentum", self.momentum, low=0.0, high=1.0)
        if self.momentum >= 1:
            raise ValueError(f"{name}: momentum must be < 1, got {self.momentum!r}")
        return _float_dtype(name, self.dtype)

    def fit(self, X, y):
        """Fit on ``X`` (n_samples, n_features) and ``y`` (n_samples,) or (n_samples,
        n_targets); returns ``self``."""
        dtype = self._check_params()  # before validate_data records anything about this fit
        X, y = _validate_data(self, X, y, dtype=[np.float64, np.float32], multi_output=True,
                              y_numeric=True)
        X = X.astype(np.float64)
        Y = y.reshape(len(y), -1).astype(np.float64)
        n, d = X.shape
        k = Y.shape[1]
        if self.fit_intercept:
            mu, s = X.mean(axis=0), X.std(axis=0)
            ybar, sy = Y.mean(axis=0), Y.std(axis=0)
        else:
            mu, s = np.zeros(d), np.sqrt((X * X).mean(axis=0))
            ybar, sy = np.zeros(k), np.sqrt((Y * Y).mean(axis=0))
        s = np.where(s > 1e-12 * (1.0 + np.abs(mu)), s, 1.0)
        sy = np.where(sy > 0, sy, 1.0)
        Z = ((X - mu) / s).astype(dtype)
        T = ((Y - ybar) / sy).astype(dtype)

        Z1 = np.hstack([Z, np.ones((n, 1))]) if self.fit_intercept else Z
        if self.learning_rate != "auto":
            lr = float(self.learning_rate)
        elif self.solver == "gd":
            lr = 1.0 / (2.0 * float(np.linalg.eigvalsh(Z1.T @ Z1 / n)[-1]))
        else:  # Ma, Bassily & Belkin (2018): the largest safe step of mini-batch SGD
            B = min(int(self.batch_size), n)
            L = 2.0 * float(np.linalg.eigvalsh(Z1.T @ Z1 / n)[-1])
            L_max = 2.0 * float(np.max(np.einsum("ij,ij->i", Z1, Z1)))
            lr = B / (L_max + (B - 1) * L)

        # (rng=0: the weights are set to zero next, so no generator of anyone's is drawn from)
        model = nn.Linear(d, k, bias=bool(self.fit_intercept), dtype=dtype, rng=0)
        model.weight.data[...] = 0.0
        if model.bias is not None:
            model.bias.data[...] = 0.0
        model = nn.Sequential(model)
        # L = Σ_targets mean_rows (ŷ - t)²: each target is its own least-squares problem
        loss = (lambda yb, out: losses.mse(yb, out) * float(k))
        conv = _GradientTolerance(max(float(self.tol), 100 * float(np.finfo(dtype).eps)))
        gd = self.solver == "gd"
        history = _train.train(
            model, loss, optim.sgd(lr, momentum=float(self.momentum)), Z, T,
            epochs=int(self.max_iter), batch_size=n if gd else min(int(self.batch_size), n),
            shuffle=not gd, rng=_generator(self.random_state), callbacks=[conv],
            progress=False)
        w = np.array(model[0].weight.data, dtype=np.float64)       # (k, d)
        b = (np.array(model[0].bias.data, dtype=np.float64) if self.fit_intercept
             else np.zeros(k))
        coef = sy[:, None] * w / s[None, :]
        intercept = ybar + sy * b - coef @ mu
        single = y.ndim == 1
        self.coef_ = coef[0] if single else coef
        if not self.fit_intercept:
            self.intercept_ = 0.0 if single else np.zeros(k)
        else:
            self.intercept_ = float(intercept[0]) if single else intercept
        self.n_iter_ = len(history)
        self.loss_curve_ = list(history.train_loss)
        self.learning_rate_ = lr
        self._dtype = dtype
        if not conv.converged:
            warnings.warn(f"LinearRegression: {self.solver} did not reach tol={self.tol} within "
                          f"max_iter={self.max_iter} epochs; increase max_iter",
                          ConvergenceWarning, stacklevel=2)
        return self

    def predict(self, X):
        """``X @ coef_.T + intercept_``."""
        check_is_fitted(self)
        X = _validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        out = X.astype(np.float64) @ np.asarray(self.coef_).T + self.intercept_
        return out.astype(self._dtype, copy=False)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # fit accepts 2-d y (several targets)
        return tags
