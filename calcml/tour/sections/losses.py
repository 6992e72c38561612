"""Tour section ``losses`` (chapter 9.3, loss functions and their derivatives).

All twelve losses of :mod:`calcml.losses`, each with its closed-form derivative
(``loss.derivative``) against reverse-mode autodiff (:func:`calcml.grad`) and central
differences: the gallery of values and derivatives, the check on random batches, the
chapter's per-sample derivatives against the derivative of the *mean* (a factor n apart for
BCE, hinge and Huber), Huber against MSE on a regression with outliers, and the stable forms
(BCE from logits, softmax cross-entropy, log-cosh) at extreme inputs.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.optimize

import calcml as cm
from calcml import viz
from calcml.tour import section
from calcml.tour.context import worst as _worst

LOSSES = cm.losses

#: The twelve losses of API.md §3, in the order of the gallery and the tables.
NAMES = ["mse", "mae", "huber", "log_cosh", "binary_cross_entropy",
         "binary_cross_entropy_with_logits", "hinge", "focal", "cross_entropy",
         "categorical_cross_entropy", "kl_divergence", "triplet"]


# --- the gallery: each loss along a one-parameter path ------------------------------------------

def _elementwise(loss, y, t, **kw):
    """Per-sample value, closed-form and autodiff derivative of an element-wise loss along
    ŷ = t (each grid point one sample; the 1/N of the mean is undone)."""
    n = t.size
    value = np.array([float(loss(y[i:i + 1], t[i:i + 1], **kw)) for i in range(n)])
    closed = loss.derivative(y, t, **kw) * n
    auto = cm.grad(lambda p: loss(y, p, **kw))(t) * n
    return value, closed, auto


def _rows(loss, y, make, direction, t):
    """Per-row value and directional derivative d/dt of a row loss at rows ``make(t)``, which
    move along ``direction`` (one row per grid point): closed form ⟨derivative, direction⟩
    against ``cm.grad`` of the whole batch along the same path."""
    z = make(t)
    m = t.size
    value = np.array([float(loss(y[i:i + 1], z[i:i + 1])) for i in range(m)])
    closed = np.sum(loss.derivative(y, z) * direction, axis=-1) * m
    auto = cm.grad(lambda s: loss(y, make(s)))(t) * m
    return value, closed, auto


def gallery(npts):
    """``{name: [(label, x, value, closed, autodiff), ...]}`` with the axis label and range.

    The grids have an even number of points placed so that no point lands on a kink
    (r = 0 for MAE, |r| = δ for Huber, y·ŷ = 1 for the hinge, h = 0 for the triplet)."""
    out = {}
    r = np.linspace(-3, 3, npts)
    zero = np.zeros(npts)
    for name in ("mse", "mae", "huber", "log_cosh"):
        out[name] = ("residual ŷ − y", [("y = 0", r, *_elementwise(getattr(LOSSES, name), zero,
                                                                   r))])
    p = np.linspace(0.01, 0.99, npts)
    out["binary_cross_entropy"] = ("probability ŷ", [
        (f"y = {y:g}", p, *_elementwise(LOSSES.binary_cross_entropy, np.full(npts, y), p))
        for y in (1.0, 0.0)])
    z = np.linspace(-6, 6, npts)
    out["binary_cross_entropy_with_logits"] = ("logit z", [
        (f"y = {y:g}", z, *_elementwise(LOSSES.binary_cross_entropy_with_logits,
                                        np.full(npts, y), z)) for y in (1.0, 0.0)])
    m = np.linspace(-2, 3, npts)
    out["hinge"] = ("margin y·ŷ (y = +1)", [("y = +1", m, *_elementwise(
        LOSSES.hinge, np.ones(npts), m))])
    out["focal"] = ("probability ŷ (y = 1)", [
        (f"gamma {g:g}", p, *_elementwise(LOSSES.focal, np.ones(npts), p, gamma=g))
        for g in (0.0, 2.0)])
    # three classes, label 0, logits (t, 0, 0): the loss is log(1 + 2e^{-t})
    e0 = np.array([1.0, 0.0, 0.0])
    out["cross_entropy"] = ("logit z₀ of the true class (others 0)", [(
        "label 0 of 3", z, *_rows(LOSSES.cross_entropy, np.zeros(npts, dtype=int),
                                  lambda s: s[:, None] * e0, e0, z))])
    # two classes, probabilities (t, 1 − t): moving along the simplex, direction (1, −1)
    q = np.linspace(0.02, 0.98, npts)
    d2 = np.array([1.0, -1.0])

    def simplex(s):
        return cm.stack([s, 1.0 - s], axis=-1)

    out["categorical_cross_entropy"] = ("ŷ = (t, 1 − t), y = (1, 0)", [(
        "y = (1, 0)", q, *_rows(LOSSES.categorical_cross_entropy, np.tile([1.0, 0.0],
                                                                          (npts, 1)),
                                simplex, d2, q))])
    out["kl_divergence"] = ("q = (t, 1 − t), p = (0.3, 0.7)", [(
        "p = (0.3, 0.7)", q, *_rows(LOSSES.kl_divergence, np.tile([0.3, 0.7], (npts, 1)),
                                    simplex, d2, q))])
    # anchor 0, positive (1, 0), negative (t, 0): h = 1 − t + margin, margin 1
    tn = np.linspace(0.05, 4.0, npts)
    a = np.zeros((npts, 2))
    pos = np.tile([1.0, 0.0], (npts, 1))
    neg = np.stack([tn, np.zeros(npts)], axis=-1)
    value = np.array([float(LOSSES.triplet(a[i:i + 1], pos[i:i + 1], neg[i:i + 1]))
                      for i in range(npts)])
    closed = LOSSES.triplet.derivative(a, pos, neg)[2][:, 0] * npts
    auto = cm.grad(lambda s: LOSSES.triplet(a, pos, cm.stack([s, s * 0.0], axis=-1)))(tn)
    out["triplet"] = ("distance t of the negative (‖a − p‖ = 1)", [
        ("margin 1", tn, value, closed, auto * npts)])
    return out


# --- random batches for the closed form vs autodiff check ----------------------------------------

def batches(rng, n=32, C=5, dtype=np.float64):
    """``{name: (args, kwargs)}``: a random batch for each loss, away from kinks."""
    def probs(shape):
        e = np.exp(rng.standard_normal(shape))
        return e / e.sum(-1, keepdims=True)

    def f(a):
        return np.asarray(a, dtype=dtype)

    lab = rng.integers(0, 2, n).astype(dtype)
    return {
        "mse": ((f(rng.standard_normal(n)), f(rng.standard_normal(n))), {}),
        "mae": ((f(rng.standard_normal(n)), f(rng.standard_normal(n))), {}),
        "huber": ((f(rng.standard_normal(n)), f(2 * rng.standard_normal(n))), {"delta": 1.0}),
        "log_cosh": ((f(rng.standard_normal(n)), f(3 * rng.standard_normal(n))), {}),
        "binary_cross_entropy": ((lab, f(rng.uniform(0.05, 0.95, n))), {}),
        "binary_cross_entropy_with_logits": ((lab, f(3 * rng.standard_normal(n))), {}),
        "hinge": ((f(rng.choice([-1.0, 1.0], n)), f(2 * rng.standard_normal(n))), {}),
        "focal": ((lab, f(rng.uniform(0.05, 0.95, n))), {"gamma": 2.0, "alpha": 0.25}),
        "cross_entropy": ((rng.integers(0, C, n), f(2 * rng.standard_normal((n, C)))), {}),
        "categorical_cross_entropy": ((f(probs((n, C))), f(probs((n, C)))), {}),
        "kl_divergence": ((f(probs((n, C))), f(probs((n, C)))), {}),
        "triplet": (tuple(f(rng.standard_normal((n, 3))) for _ in range(3)), {"margin": 1.0}),
    }


def central_differences(fun, x, h=1e-6):
    """∂fun/∂x entry by entry: (fun(x + h e_i) − fun(x − h e_i)) / 2h."""
    out = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        out[i] = (float(fun(x + e)) - float(fun(x - e))) / (2 * h)
    return out


# --- the chapter's derivatives (section 9.3), written as the chapter writes them ----------------

def chapter_derivatives(n, delta=1.0):
    """``{name: (formula, function(y, ŷ) -> the chapter's ∂L/∂ŷ_i)}``."""
    return {
        "mse": ("(2/n)(ŷᵢ − yᵢ)", lambda y, p: 2.0 / n * (p - y)),
        "binary_cross_entropy": ("(ŷᵢ − yᵢ) / (ŷᵢ(1 − ŷᵢ))", lambda y, p: (p - y) / (p * (1 - p))),
        "categorical_cross_entropy": ("−yᵢⱼ / (n ŷᵢⱼ)", lambda y, p: -y / (n * p)),
        "hinge": ("−yᵢ if yᵢŷᵢ < 1, else 0", lambda y, p: np.where(y * p < 1, -y, 0.0)),
        "huber": ("ŷᵢ − yᵢ if |r| ≤ δ, else δ·sign(ŷᵢ − yᵢ)",
                  lambda y, p: np.where(np.abs(y - p) <= delta, p - y, delta * np.sign(p - y))),
    }


def naive_chapter_focal(y, p, gamma=2.0):
    """The chapter's focal loss, −(1/n) Σ y (1 − ŷ)^γ log ŷ: the positive term only."""
    return float(-np.mean(y * (1 - p) ** gamma * np.log(p)))


# --- the section --------------------------------------------------------------------------------

@section("losses", title="Loss functions and their derivatives", chapter="9.3",
         description="The twelve losses and their closed-form derivatives against autodiff; "
                     "the chapter's per-sample derivatives; Huber vs MSE under outliers; "
                     "stable forms at extreme inputs.")
def run(ctx):
    """Chapter 9.3."""
    _gallery(ctx)
    _closed_vs_autodiff(ctx)
    _chapter(ctx)
    _huber_vs_mse(ctx)
    _stability(ctx)


def _gallery(ctx):
    ctx.status("gallery")
    npts = ctx.size(160, 60)
    gal = gallery(npts)
    worst = {}
    fig, axes = viz.new_figure(3, 4, size=(17, 11.5))
    # a fixed layout: the constrained one costs a second on twelve panels
    fig.set_layout_engine(None)
    fig.subplots_adjust(left=0.035, right=0.99, bottom=0.05, top=0.95, wspace=0.2, hspace=0.38)
    for ax, name in zip(axes.ravel(), NAMES, strict=True):
        xlabel, curves = gal[name]
        diffs = []
        for i, (label, x, value, closed, auto) in enumerate(curves):
            c = viz.COLORS[(2 * i) % len(viz.COLORS)]
            ax.plot(x, value, "-", color=c, lw=1.7, label=f"L, {label}")
            ax.plot(x, closed, "--", color=c, lw=1.2, label=f"dL/dt, {label}")
            ax.plot(x[::6], auto[::6], "o", mfc="none", color=c, ms=4,
                    label="cm.grad" if i == 0 else None)
            diffs.append(float(np.max(np.abs(closed - auto))))
        worst[name] = max(diffs)
        ax.axhline(0, color="0.6", lw=0.7)
        vals = np.concatenate([np.r_[cv[2], cv[3]] for cv in curves])
        lo, hi = max(float(vals.min()), -5.0), min(float(vals.max()), 6.0)
        span = hi - lo
        ax.set_ylim(lo - 0.08 * span, hi + 0.45 * span)  # room for the legend on top
        ax.set_xlabel(xlabel, fontsize=8.5)
        ax.set_title(f"{name}\nmax |closed form − cm.grad| = {worst[name]:.1e}", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6.5, loc="upper center", ncol=2 if len(curves) > 1 else 1)
    ctx.text(
        "§9.3 lists the losses; `cm.losses` has twelve, each a batch mean written in calcml's "
        "operations (so `cm.grad` differentiates it) and each with `.derivative`, its "
        "closed-form derivative with respect to the prediction written by hand in NumPy, "
        "under the same reduction (element-wise losses: the mean over all N entries; losses "
        "over a class or feature axis: the sum over it and the mean over the M rows). The "
        "gallery moves each loss along one parameter (the residual, the probability, the "
        "logit, the margin, a point moving along the simplex, the distance of the negative "
        "example) and shows the per-sample value (solid) and its derivative along the path "
        "(dashed: the closed form, circles: `cm.grad` of the same batch), both multiplied "
        "by N to undo the mean. For the probability losses (categorical cross-entropy, KL) "
        "the path (t, 1 − t) moves two coordinates, and the derivative shown is the closed "
        "form contracted with the direction (1, −1): the KL divergence has its minimum, "
        "derivative 0, at q = p.")
    ctx.figure(fig, "gallery",
               "Every loss L (solid) and its derivative dL/dt along the path (dashed: the "
               "closed form `.derivative`; circles: `cm.grad`), per sample. Regression "
               "losses against the residual: MSE grows quadratically with a linear, "
               "unbounded derivative; MAE, Huber and log-cosh have bounded derivatives (±1), "
               "Huber's and log-cosh's continuous. Classification losses against the "
               "probability, logit or margin; the triplet loss against the distance of the "
               "negative.")
    ctx.check("gallery: max |closed form − cm.grad| over every loss and path point", 0.0,
              _worst(worst.values()), atol=1e-12)
    ctx.metric("gallery_max_abs_diff", worst)


def _closed_vs_autodiff(ctx):
    ctx.status("closed form vs autodiff")
    rng = np.random.default_rng(20)
    n = ctx.size(32, 12)
    cases = batches(rng, n=n)
    rows, diffs, fd_err = [], {}, {}
    for name in NAMES:
        loss = getattr(LOSSES, name)
        args, kw = cases[name]
        if name == "triplet":
            closed = loss.derivative(*args, **kw)
            auto = cm.grad(lambda a, p, q: loss(a, p, q, **kw), argnums=(0, 1, 2))(*args)
            fd = [central_differences(lambda v, i=i: loss(*[v if j == i else args[j]
                                                            for j in range(3)], **kw), args[i])
                  for i in range(3)]
            d = max(float(np.max(np.abs(c - a))) for c, a in zip(closed, auto, strict=True))
            e = max(float(np.max(np.abs(c - f) / (np.abs(f) + 1e-3)))
                    for c, f in zip(closed, fd, strict=True))
            scale = max(float(np.max(np.abs(c))) for c in closed)
        else:
            y, p = args
            closed = loss.derivative(y, p, **kw)
            auto = cm.grad(lambda q: loss(y, q, **kw))(p)
            fd = central_differences(lambda q: loss(y, q, **kw), p)
            d = float(np.max(np.abs(closed - auto)))
            e = float(np.max(np.abs(closed - fd) / (np.abs(fd) + 1e-3)))
            scale = float(np.max(np.abs(closed)))
        diffs[name], fd_err[name] = d, e
        rows.append([name, str(args[-1].shape), scale, d, e])
    # float32 is kept by both the closed form and autodiff
    cases32 = batches(np.random.default_rng(5), n=8, dtype=np.float32)
    kept = []
    for name in NAMES:
        loss = getattr(LOSSES, name)
        args, kw = cases32[name]
        closed = loss.derivative(*args, **kw)
        closed = closed if isinstance(closed, tuple) else (closed,)
        argnums = (0, 1, 2) if name == "triplet" else 1
        auto = cm.grad(lambda *a: loss(*a, **kw), argnums=argnums)(*args)
        auto = auto if isinstance(auto, tuple) else (auto,)
        kept.append(all(np.asarray(v).dtype == np.float32 for v in closed + auto))
    ctx.text(
        f"On random batches (n = {n} samples, 5 classes for the class losses, away from the "
        "kinks), the closed form is compared entry by entry with `cm.grad` and with central "
        "differences of the mean loss (h = 1e-6). The closed form and reverse mode agree to "
        "rounding: they are two independent derivations of the same formula. For `triplet` "
        "the derivative is the triple (∂L/∂anchor, ∂L/∂positive, ∂L/∂negative).")
    ctx.table(["loss", "ŷ shape", "max |dL/dŷ|", "max |closed − cm.grad|",
               "max rel. |closed − central diff.|"], rows,
              caption="Closed-form derivative against reverse mode and central differences")
    ctx.check("every loss: max |.derivative − cm.grad| on a random batch (12 losses)", 0.0,
              _worst(diffs.values()), atol=1e-14)
    ctx.check("every loss: .derivative vs central differences, max rel. error", 0.0,
              _worst(fd_err.values()), atol=1e-6)
    ctx.check("float32 in, float32 out: .derivative and cm.grad of all 12 losses", True,
              all(kept), cmp="==")
    ctx.metric("closed_vs_autodiff_max_abs", diffs)
    ctx.metric("closed_vs_central_max_rel", fd_err)


def _chapter(ctx):
    ctx.status("the chapter's derivatives")
    rng = np.random.default_rng(3)
    n = ctx.size(8, 6)
    C = 3
    delta = 1.0
    e = np.exp(rng.standard_normal((n, C)))
    cases = {
        "mse": (rng.standard_normal(n), rng.standard_normal(n), {}),
        "binary_cross_entropy": (rng.integers(0, 2, n).astype(float),
                                 rng.uniform(0.1, 0.9, n), {}),
        "categorical_cross_entropy": (np.eye(C)[rng.integers(0, C, n)],
                                      e / e.sum(-1, keepdims=True), {}),
        "hinge": (rng.choice([-1.0, 1.0], n), rng.uniform(-1.5, 0.9, n), {}),
        "huber": (np.zeros(n), rng.choice([-1.0, 1.0], n) * rng.uniform(0.2, 3.0, n),
                  {"delta": delta}),
    }
    # the mean has rows M = n for the class loss too (one row per sample)
    expected = {"mse": 1.0, "binary_cross_entropy": float(n), "categorical_cross_entropy": 1.0,
                "hinge": float(n), "huber": float(n)}
    forms = chapter_derivatives(n, delta)
    rows, ratios = [], {}
    for name, (y, p, kw) in cases.items():
        loss = getattr(LOSSES, name)
        fd = central_differences(lambda q, loss=loss, y=y, kw=kw: loss(y, q, **kw), p)
        ours = loss.derivative(y, p, **kw)
        chap = forms[name][1](y, p)
        # the entries where the derivative is not 0 (a NaN difference is kept: it must fail)
        nz = ~(np.abs(fd) <= 1e-8)
        r_ch = chap[nz] / fd[nz]
        r_ours = ours[nz] / fd[nz]
        ratios[name] = (float(np.min(r_ch)), float(np.max(r_ch)))
        rows.append([name, forms[name][0], n, expected[name], float(np.min(r_ch)),
                     float(np.max(r_ch)), float(np.max(np.abs(r_ours - 1)))])
        ctx.check(f"chapter's {name} derivative / central difference of the mean loss = "
                  f"{expected[name]:g} (every entry)", expected[name], r_ch, rtol=1e-6)
        ctx.check(f"calcml's {name}.derivative / central difference = 1 (every entry)", 1.0,
                  r_ours, rtol=1e-6)
    ctx.text(
        "The chapter writes every loss as a mean, (1/n)Σ, but gives several derivatives per "
        "sample: its binary cross-entropy (ŷ − y)/(ŷ(1 − ŷ)), hinge (−y) and Huber "
        "(ŷ − y, or δ·sign) derivatives are those of one term, without the 1/n of the mean. "
        "Its MSE (2/n)(ŷ − y) and categorical cross-entropy −y/(nŷ) derivatives carry it. "
        "Measured against central differences of the mean loss, the ratio is exactly n for "
        "the first three and 1 for the other two; calcml's `.derivative` has ratio 1 for all. "
        "The difference matters in practice: a gradient n times too large is a learning rate "
        "n times too large.")
    ctx.table(["loss", "the chapter's ∂L/∂ŷᵢ", "n", "expected ratio", "min ratio", "max ratio",
               "max |ours/central − 1|"], rows,
              caption="The chapter's derivatives divided by the derivative of the mean loss")
    # the chapter's focal loss has no negative-class term
    y0 = np.zeros(4)
    bad = np.array([0.99, 0.9, 0.8, 0.95])  # confident mistakes on negatives
    chap_focal = naive_chapter_focal(y0, bad)
    ours_focal = float(LOSSES.focal(y0, bad, gamma=2.0))
    yb = np.array([1.0, 0.0, 1.0, 0.0])
    pb = np.array([0.7, 0.2, 0.4, 0.6])
    ctx.text(
        "The chapter's focal loss, −(1/n)Σ yᵢ(1 − ŷᵢ)^γ log ŷᵢ, has only the positive-class "
        "term: every example with y = 0 costs nothing, whatever is predicted. "
        "`cm.losses.focal` is the two-sided loss of Lin et al. (2017), −(1/n)Σ[y(1 − ŷ)^γ "
        "log ŷ + (1 − y)ŷ^γ log(1 − ŷ)], which reduces to the binary cross-entropy at γ = 0. "
        f"On four negatives predicted at ŷ = {bad.tolist()}, the chapter's loss is "
        f"{chap_focal:g} and ours {ours_focal:.4g}.")
    ctx.check("the chapter's focal loss is 0 on confidently wrong negatives (ŷ ≥ 0.8, y = 0)",
              0.0, chap_focal, atol=0.0)
    ctx.check("calcml's focal loss penalises them (> 1)", 1.0, ours_focal, cmp=">")
    ctx.check("focal with γ = 0 equals the binary cross-entropy", float(
        LOSSES.binary_cross_entropy(yb, pb)), float(LOSSES.focal(yb, pb, gamma=0.0)),
        rtol=1e-14)
    ctx.metric("chapter_ratio_min_max", ratios)


def huber_fit_data(rng, n, frac, slope=2.0, intercept=1.0):
    """x ~ U(−1, 1), y = slope·x + intercept + N(0, 0.2²); the ``frac`` of the points with the
    largest x are pulled down by U(5, 10): outliers with leverage, which tilt the fit."""
    x = rng.uniform(-1, 1, n)
    y = slope * x + intercept + 0.2 * rng.standard_normal(n)
    m = int(round(frac * n))
    out = np.argsort(x)[n - m:] if m else np.array([], dtype=int)
    y[out] -= rng.uniform(5, 10, m)
    return x, y, out


def fit_line(loss, x, y, **kw):
    """(slope, intercept) minimizing ``loss(y, w·x + b)`` by gradient descent
    (:func:`calcml.optimize.minimize`, α = 1/L with L the largest curvature of the loss)."""
    Z = np.stack([x, np.ones_like(x)], axis=1)
    curv = 2.0 if loss is LOSSES.mse else 1.0  # f'' of the loss in the residual, at most
    L = curv * float(np.linalg.eigvalsh(Z.T @ Z / len(x)).max())
    res = cm.optimize.minimize(lambda w: loss(y, Z @ w, **kw), np.zeros(2),
                               learning_rate=1.0 / L, max_iter=20000, tol=1e-12,
                               keep_trajectory=False)
    return res


def _huber_vs_mse(ctx):
    ctx.status("Huber vs MSE")
    rng = np.random.default_rng(11)
    n, frac, delta = 100, 0.15, 1.0
    x, y, out = huber_fit_data(rng, n, frac)
    Z = np.stack([x, np.ones(n)], axis=1)
    fits = {"MSE": fit_line(LOSSES.mse, x, y),
            f"Huber, δ = {delta:g}": fit_line(LOSSES.huber, x, y, delta=delta),
            "log-cosh": fit_line(LOSSES.log_cosh, x, y)}
    w_ls = np.linalg.lstsq(Z, y, rcond=None)[0]

    def huber_np(w):
        r = np.abs(Z @ w - y)
        return np.mean(np.where(r <= delta, 0.5 * r ** 2, delta * r - 0.5 * delta ** 2))

    w_ref = scipy.optimize.minimize(huber_np, np.zeros(2), method="BFGS",
                                    options={"gtol": 1e-12}).x
    huber_key = f"Huber, δ = {delta:g}"
    w_h = fits[huber_key].x
    # first-order optimality through the closed form: Zᵀ ∂L/∂ŷ = 0
    grad_w = Z.T @ LOSSES.huber.derivative(y, Z @ w_h, delta=delta)
    err = {k: abs(float(r.x[0]) - 2.0) for k, r in fits.items()}
    ctx.check("MSE fit by gradient descent = least squares (max abs. diff.)", 0.0,
              float(np.max(np.abs(fits["MSE"].x - w_ls))), atol=1e-9)
    ctx.check("Huber fit by gradient descent = scipy BFGS on the same objective", 0.0,
              float(np.max(np.abs(w_h - w_ref))), atol=1e-6)
    ctx.check("Huber fit: ‖Zᵀ huber.derivative‖ = 0 at the solution (optimality)", 0.0,
              float(np.linalg.norm(grad_w)), atol=1e-9)
    ctx.check(f"{int(frac * 100)}% outliers: slope error of Huber < slope error of MSE",
              err["MSE"], err[huber_key], cmp="<")
    ctx.check("... and Huber's is at most half of MSE's", err["MSE"] / 2, err[huber_key],
              cmp="<=")
    for k, r in fits.items():
        ctx.metric(f"fit_{k.split(',')[0].lower()}_slope_intercept", [float(v) for v in r.x])
        ctx.metric(f"fit_{k.split(',')[0].lower()}_iterations", int(r.nit))
    ctx.metric("slope_error", err)

    # outlier fraction sweep
    fracs = ctx.size([0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3], [0.0, 0.1, 0.2, 0.3])
    sweep = {"MSE": [], huber_key: [], "log-cosh": []}
    rng2 = np.random.default_rng(12)
    for fr in fracs:
        xs, ys, _ = huber_fit_data(rng2, n, fr)
        sweep["MSE"].append(abs(np.linalg.lstsq(np.stack([xs, np.ones(n)], 1), ys,
                                                rcond=None)[0][0] - 2.0))
        sweep[huber_key].append(abs(float(fit_line(LOSSES.huber, xs, ys, delta=delta).x[0])
                                    - 2.0))
        sweep["log-cosh"].append(abs(float(fit_line(LOSSES.log_cosh, xs, ys).x[0]) - 2.0))
    better = [h < m for h, m, fr in zip(sweep[huber_key], sweep["MSE"], fracs, strict=True)
              if 0.1 <= fr <= 0.25]
    ctx.check("sweep: Huber's slope error < MSE's for every outlier fraction in [10%, 25%]",
              True, all(better), cmp="==")
    ctx.metric("sweep_fractions", fracs)
    ctx.metric("sweep_slope_error", {k: [float(v) for v in vs] for k, vs in sweep.items()})
    ctx.text(
        f"Huber against MSE under outliers: {n} points y = 2x + 1 + noise on x ∈ [−1, 1], of "
        f"which the {int(frac * 100)}% with the largest x are pulled down by 5 to 10 (outliers "
        "with leverage). The line is fitted by minimizing each loss with gradient descent "
        "(`cm.optimize.minimize`, α = 1/L); the MSE fit equals least squares, the Huber fit "
        "equals scipy's BFGS on the same objective. MSE's derivative grows with the residual, "
        "so the few outliers dominate the gradient and tilt the line; Huber's derivative is "
        "capped at δ/n per point, so an outlier pulls no harder than a point at residual δ. "
        f"Slope errors: MSE {err['MSE']:.3f}, Huber {err[huber_key]:.3f}, log-cosh "
        f"{err['log-cosh']:.3f}. Robust is not invulnerable: each outlier still pulls with "
        "δ/n, and with leverage points these pulls add up; at 30% outliers Huber's fit is "
        "as bad as MSE's (right).")
    fig, axes = viz.new_figure(1, 3, size=(16, 4.4))
    inl = np.setdiff1d(np.arange(n), out)
    axes[0].plot(x[inl], y[inl], ".", color="0.45", label="data")
    axes[0].plot(x[out], y[out], "x", color="0.15", label="outliers")
    xx = np.linspace(-1, 1, 2)
    axes[0].plot(xx, 2 * xx + 1, "k:", lw=1.2, label="true: y = 2x + 1")
    for i, (k, r) in enumerate(fits.items()):
        axes[0].plot(xx, r.x[0] * xx + r.x[1], "-", color=viz.COLORS[i], lw=1.6,
                     label=f"{k}: slope {r.x[0]:.2f}")
    axes[0].set_xlabel("x")
    axes[0].set_ylabel("y")
    axes[0].set_title("fits with 15% outliers", fontsize=10)
    axes[0].legend(fontsize=7)
    axes[0].grid(True, alpha=0.3)
    # per-point influence: |∂L/∂ŷᵢ| at the MSE and Huber fits
    for i, (k, loss, kw) in enumerate([("MSE", LOSSES.mse, {}),
                                       (huber_key, LOSSES.huber, {"delta": delta})]):
        w = fits[k].x
        infl = np.abs(loss.derivative(y, Z @ w, **kw)) * n
        axes[1].plot(np.abs(Z @ w - y), infl, "o", ms=3.5, color=viz.COLORS[i],
                     label=f"{k}")
    axes[1].set_xlabel("|residual| at the fit")
    axes[1].set_ylabel("n·|∂L/∂ŷᵢ|: the pull of point i")
    axes[1].set_title("influence of each point on the gradient", fontsize=10)
    axes[1].legend(fontsize=8)
    axes[1].grid(True, alpha=0.3)
    viz.line_plot(axes[2], np.array(fracs) * 100, sweep, xlabel="outliers (% of points)",
                  ylabel="|slope − 2|", title="slope error against the outlier fraction")
    ctx.figure(fig, "huber-vs-mse",
               "Left: a linear fit with 15% leverage outliers: MSE follows the outliers, Huber "
               "and log-cosh stay near the true line. Middle: the pull of each point, "
               "n·|∂L/∂ŷᵢ|, grows without bound for MSE (2|r|) and stops at δ = 1 for Huber. "
               "Right: slope error against the fraction of outliers.")


def _stability(ctx):
    ctx.status("stability")
    rows = []
    ok_all = []
    big = 1e4
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        for dt in (np.float64, np.float32):
            tname = np.dtype(dt).name
            # BCE from logits at ±1e4: -log σ(−1e4) = 1e4
            for yv, zv in ((1.0, -big), (0.0, big), (1.0, big), (0.0, -big)):
                y = np.array([yv], dtype=dt)
                z = np.array([zv], dtype=dt)
                exact = abs(zv) if (yv == 1.0) == (zv < 0) else 0.0
                val = float(LOSSES.binary_cross_entropy_with_logits(y, z))
                g = cm.grad(lambda q, y=y: LOSSES.binary_cross_entropy_with_logits(y, q))(z)
                s = 1 / (1 + np.exp(-z))
                naive = float(-(y * np.log(s) + (1 - y) * np.log(1 - s))[0])
                good = math.isfinite(val) and abs(val - exact) <= 1e-6 * max(exact, 1) \
                    and bool(np.all(np.isfinite(g)))
                ok_all.append(good)
                rows.append([f"BCE with logits, y = {yv:g}, z = {zv:g}", tname, exact, val,
                             float(g[0]), naive])
            # softmax cross-entropy at logits (1e4, −1e4, 0), label 1: 2e4
            z = np.array([[big, -big, 0.0]], dtype=dt)
            val = float(LOSSES.cross_entropy(np.array([1]), z))
            g = cm.grad(lambda q: LOSSES.cross_entropy(np.array([1]), q))(z)
            naive = float(-np.log(np.exp(z[0, 1]) / np.sum(np.exp(z[0]))))
            good = abs(val - 2 * big) <= 1e-6 * 2 * big and bool(np.all(np.isfinite(g)))
            ok_all.append(good)
            rows.append(["cross_entropy, z = (1e4, −1e4, 0), label 1", tname, 2 * big, val,
                         float(np.max(np.abs(g))), naive])
            # log-cosh at large residuals: log cosh r = |r| − log 2 (exactly, in floating point)
            for r in (1e3, -1e4):
                yp = np.array([r], dtype=dt)
                val = float(LOSSES.log_cosh(np.zeros(1, dtype=dt), yp))
                g = cm.grad(lambda q: LOSSES.log_cosh(np.zeros(1, dtype=dt), q))(yp)
                naive = float(np.log(np.cosh(yp))[0])
                exact = abs(r) - math.log(2.0)
                good = abs(val - exact) <= 1e-6 * abs(r) and abs(float(g[0]) - np.sign(r)) \
                    <= 1e-6
                ok_all.append(good)
                rows.append([f"log_cosh, residual {r:g}", tname, exact, val, float(g[0]),
                             naive])
            # probabilities at exactly 0 and 1: clipped to [eps, 1 − eps]
            y = np.array([1.0, 0.0], dtype=dt)
            p = np.array([0.0, 1.0], dtype=dt)
            val = float(LOSSES.binary_cross_entropy(y, p))
            g = cm.grad(lambda q: LOSSES.binary_cross_entropy(y, q))(p)
            eps = float(np.finfo(dt).eps)
            exact = -math.log(eps)
            good = abs(val - exact) <= 1e-3 * exact and bool(np.all(np.isfinite(g))) \
                and g[0] < 0 < g[1]
            ok_all.append(good)
            naive = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
            rows.append(["binary_cross_entropy, ŷ = (0, 1) for y = (1, 0)", tname,
                         exact, val, float(g[0]), naive])
    ctx.text(
        "Stable forms. Written naively, the binary cross-entropy of σ(z) takes log of a "
        "sigmoid that has underflowed to 0, the softmax overflows exp(1e4), and cosh "
        "overflows beyond |r| ≈ 710 (89 in float32): the results are inf or nan (last "
        "column). `binary_cross_entropy_with_logits` is computed as "
        "y·softplus(−z) + (1 − y)·softplus(z), `cross_entropy` through log_softmax = z − "
        "logsumexp(z), `log_cosh` as r + softplus(−2r) − log 2: values and gradients stay "
        "finite and exact, in float64 and float32. The probability losses clip ŷ to "
        "[eps, 1 − eps], so ŷ = 0 for y = 1 costs −log eps, finite, with a gradient that "
        "still points the right way.")
    ctx.table(["case", "dtype", "exact value", "calcml", "gradient (first entry / max)",
               "naive formula"], rows, caption="Losses at extreme inputs")
    ctx.check(f"stable forms: value exact and gradient finite in all {len(ok_all)} extreme "
              "cases (float64 and float32)", len(ok_all), sum(ok_all), cmp="==")
    ctx.check("the naive formulas give inf or nan in every one of those cases", len(rows),
              sum(not math.isfinite(r[5]) for r in rows), cmp="==")
    ctx.metric("stable_cases_ok", sum(ok_all))
