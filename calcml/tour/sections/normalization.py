"""Tour sections ``batch-norm`` and ``layer-norm`` (chapter 9.6, normalization layers).

Both sections train the same deep MLP on scikit-learn's digits (six ReLU layers of 64 units,
He-normal initialisation, plain SGD, mini-batches of 64) at a range of learning rates, without
normalization and with :class:`calcml.nn.BatchNorm1d` or :class:`calcml.nn.LayerNorm` before
each activation: at a high learning rate the plain network diverges (``cm.train`` stops with
``NonFiniteError``) or stalls, the normalized one trains.

``batch-norm`` then measures the chapter's gradient ∂L/∂x = ∂L/∂y · γ/√(σ²+ε) against the
true training-mode gradient (through the batch mean and variance): equal in evaluation mode,
off by √(2/(m − 2)) for a batch of m and an isotropic ∂L/∂y; and the running statistics
against the statistics of the data they track (an exponential moving average with a
predicted transient and noise floor).  ``layer-norm`` checks the per-example mean 0 and
variance σ²/(σ²+ε) ≈ 1, the gradient against central differences and ``cm.check_grad``,
the identity "layer norm = batch norm of the transpose", and independence of the batch.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from threadpoolctl import threadpool_limits

import calcml as cm
from calcml import viz
from calcml.tour import section
from calcml.tour.context import worst

nn = cm.nn

DEPTH, WIDTH = 6, 64
BATCH = 64
N_TRAIN = 1200
HIGH_LR = 1.0
CONTROL_LR = 0.1
#: a run "trains" when its last epoch's mean training loss is below this (chance: ln 10 = 2.3)
TRAINS_BELOW = 0.5
DATA_SEED = 4


def digits_split(seed=DATA_SEED):
    """Digits, standardised per pixel (constant pixels stay 0), split 1200 / 597 at random."""
    X, y = load_digits(return_X_y=True)
    sd = X.std(axis=0)
    X = (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    perm = np.random.default_rng(seed).permutation(len(X))
    tr, te = perm[:N_TRAIN], perm[N_TRAIN:]
    return X[tr], y[tr], X[te], y[te]


def deep_mlp(norm, seed=0):
    """DEPTH × [Linear(He normal) → norm → ReLU] → Linear(64, 10); ``norm`` in {None, "bn",
    "ln"}."""
    layers, d = [], 64
    for i in range(DEPTH):
        layers.append(nn.Linear(d, WIDTH, rng=100 * seed + i, init="he_normal"))
        if norm == "bn":
            layers.append(nn.BatchNorm1d(WIDTH))
        elif norm == "ln":
            layers.append(nn.LayerNorm(WIDTH))
        layers.append(nn.ReLU())
        d = WIDTH
    layers.append(nn.Linear(d, 10, rng=100 * seed + 99, init="he_normal"))
    return nn.Sequential(*layers)


def train_deep(norm, lr, epochs, data, seed=0):
    """Train ``deep_mlp(norm)`` with SGD(lr); per-step losses, and where it stopped if the
    loss or a gradient became non-finite."""
    Xtr, ytr, Xte, yte = data
    model = deep_mlp(norm, seed)
    steps = []
    cb = cm.train.LambdaCallback(on_batch_end=lambda run, b, logs: steps.append(logs["loss"]))
    out = {"norm": norm, "lr": lr, "steps": steps, "diverged": None}
    try:
        with np.errstate(all="ignore"):  # overflow is expected on the way to divergence
            hist = cm.train(model, cm.losses.cross_entropy, cm.optim.sgd(lr), Xtr, ytr,
                            epochs=epochs, batch_size=BATCH, rng=seed, progress=False,
                            callbacks=[cb])
        out["epoch_loss"] = hist.train_loss
        out["final"] = hist.train_loss[-1]
        model.eval()
        with cm.no_grad():
            o = model(Xte)
        o = np.asarray(o.data if isinstance(o, cm.Tensor) else o)
        out["test_acc"] = float(np.mean(np.argmax(o, 1) == yte)) if np.all(np.isfinite(o)) \
            else float("nan")
    except cm.train.NonFiniteError as exc:
        out["diverged"] = {"kind": exc.kind, "epoch": exc.epoch, "batch": exc.batch,
                           "step": exc.step + 1, "parameter": exc.parameter,
                           "value": exc.value}
        out["epoch_loss"] = exc.history.train_loss
        out["final"] = float("inf")
        out["test_acc"] = float("nan")
    out["model"] = model
    return out


def _status(r):
    if r["diverged"]:
        d = r["diverged"]
        what = f"loss {d['value']}" if d["kind"] == "loss" else \
            f"gradient of {d['parameter']}"
        return f"diverged at step {d['step']} (epoch {d['epoch']}): non-finite {what}"
    return "trains" if r["final"] < TRAINS_BELOW else "does not train"


def _smooth(v, k=5):
    v = np.asarray(v, dtype=float)
    if len(v) < k:
        return v
    return np.convolve(v, np.ones(k) / k, mode="valid")


def high_lr_comparison(ctx, norm, label, lrs, curve_lrs=(HIGH_LR, CONTROL_LR)):
    """The learning-rate sweep, plain against ``norm``: table, figure and the checks common to
    both normalizations; the loss curves of ``curve_lrs`` are drawn.  Returns the runs (keyed
    by (norm or None, lr)) and the largest rate that trains, per network."""
    data = digits_split()
    epochs = 8
    runs = {}
    for lr in lrs:
        for kind in (None, norm):
            ctx.status(f"{'plain' if kind is None else label}, α = {lr:g}")
            runs[(kind, lr)] = train_deep(kind, lr, epochs, data)
    names = {None: "plain", norm: label}
    rows = [[lr, names[k], _status(runs[(k, lr)]), runs[(k, lr)]["final"],
             runs[(k, lr)]["test_acc"]] for lr in lrs for k in (None, norm)]
    largest = {names[k]: max([lr for lr in lrs if runs[(k, lr)]["final"] < TRAINS_BELOW],
                             default=0.0) for k in (None, norm)}
    hi_p, hi_n = runs[(None, HIGH_LR)], runs[(norm, HIGH_LR)]
    ctl_p = runs[(None, CONTROL_LR)]
    plain_fails = bool(hi_p["diverged"] is not None or hi_p["final"] >= 1.0)
    unstable = [lr for lr in lrs if lr >= 0.5]
    ctx.text(
        f"Training the same deep network with and without {label}: {DEPTH} hidden layers of "
        f"{WIDTH} ReLU units (He-normal weights, the right scale for ReLU), {label} between "
        f"each linear map and its activation, on {N_TRAIN} standardised digits; plain SGD "
        f"with mini-batches of {BATCH} for {epochs} epochs, by `cm.train`, at the learning "
        f"rates {', '.join(f'{lr:g}' for lr in lrs)}. A run that produces a non-finite loss "
        "or gradient is stopped by `cm.train` with `NonFiniteError`, which names the step "
        f"(and the parameter). At α = {CONTROL_LR:g} the plain network trains (final loss "
        f"{ctl_p['final']:.3f}): it is trainable, and its failure at high rates is the "
        f"learning rate's. At α = {HIGH_LR:g} the plain network {_status(hi_p)}; with "
        f"{label} the loss reaches {hi_n['final']:.3f}. The largest rate that trains (final "
        f"loss < {TRAINS_BELOW}): {largest['plain']:g} plain, {largest[label]:g} with {label}.")
    ctx.table(["learning rate", "network", "outcome", f"final training loss (epoch {epochs})",
               "test accuracy"], rows, caption="Learning-rate sweep")
    ctx.check(f"control α = {CONTROL_LR:g}: the plain network trains (final loss < "
              f"{TRAINS_BELOW})", TRAINS_BELOW, ctl_p["final"], cmp="<")
    ctx.check(f"α = {HIGH_LR:g}: the plain network diverges or stalls (non-finite, or final "
              "loss ≥ 1)", True, plain_fails, cmp="==")
    ctx.check(f"α = {HIGH_LR:g}: final loss with {label} < plain (∞ when diverged)",
              hi_p["final"], hi_n["final"], cmp="<")
    ctx.check(f"every α ≥ 0.5 ({', '.join(f'{lr:g}' for lr in unstable)}): final loss with "
              f"{label} < plain", [runs[(None, lr)]["final"] for lr in unstable],
              [runs[(norm, lr)]["final"] for lr in unstable], cmp="<")
    ctx.metric("learning_rates", list(lrs))
    ctx.metric("final_loss", {f"{names[k]} lr={lr:g}": runs[(k, lr)]["final"]
                              for lr in lrs for k in (None, norm)})
    ctx.metric("test_accuracy", {f"{names[k]} lr={lr:g}": runs[(k, lr)]["test_acc"]
                                 for lr in lrs for k in (None, norm)})
    ctx.metric("divergence", {f"plain lr={lr:g}": runs[(None, lr)]["diverged"] for lr in lrs
                              if runs[(None, lr)]["diverged"]})
    ctx.metric("largest_trainable_lr", largest)

    fig, axes = viz.new_figure(1, 2, size=(11.5, 4.3))
    ax = axes[0]
    for c, kind in enumerate((None, norm)):
        for lr, style in zip(curve_lrs, ("-", ":", "--")):
            r = runs[(kind, lr)]
            s = np.asarray(r["steps"], dtype=float)
            k = np.arange(1, len(s) + 1)
            sm = _smooth(s)
            ax.plot(k[len(k) - len(sm):], sm, style, color=viz.COLORS[c], lw=1.4,
                    label=f"{names[kind]}, α = {lr:g}")
            if r["diverged"]:
                ax.plot([r["diverged"]["step"]], [min(max(s.max(initial=1.0), 3.0), 30.0)],
                        "X", color=viz.COLORS[c], ms=11,
                        label=f"{names[kind]}, α = {lr:g}: non-finite at step "
                              f"{r['diverged']['step']}")
    ax.set_yscale("log")
    ax.set_xlabel("SGD step")
    ax.set_ylabel("training loss (mini-batch, 5-step average)")
    ax.set_title("Mini-batch losses at " + ", ".join(
        f"α = {lr:g} ({w})" for lr, w in zip(curve_lrs, ("solid", "dotted", "dashed"))),
        fontsize=9.5)
    ax.axhline(np.log(10), color="0.5", lw=0.8, ls="--")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7.5)
    ax = axes[1]
    for c, kind in enumerate((None, norm)):
        fin = np.array([runs[(kind, lr)]["final"] for lr in lrs])
        ok = np.isfinite(fin)
        ax.plot(np.array(lrs)[ok], fin[ok], "o-", color=viz.COLORS[c], label=names[kind])
        if (~ok).any():
            ax.plot(np.array(lrs)[~ok], np.full((~ok).sum(), 5.0), "X", color=viz.COLORS[c],
                    ms=11, ls="none", label=f"{names[kind]}: diverged")
    ax.axhline(np.log(10), color="0.5", lw=0.8, ls="--", label="chance, ln 10")
    ax.axhline(TRAINS_BELOW, color="0.5", lw=0.8, ls=":", label=f"'trains': < {TRAINS_BELOW}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate α")
    ax.set_ylabel(f"training loss after {epochs} epochs")
    ax.set_title("Learning-rate sweep (× at the top: diverged)", fontsize=9.5)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ctx.figure(fig, "learning-rates",
               f"Left: mini-batch losses at a high rate and at lower ones, plain against "
               f"{label}; a cross marks the step where the loss or a gradient became "
               f"non-finite. Right: the loss after {epochs} epochs against the learning rate; "
               f"{label} keeps the network trainable at rates where the plain one diverges.")
    return runs, largest


# =========================================================================================
# batch norm
# =========================================================================================

@section("batch-norm", title="Batch normalization: high learning rates, the true gradient, "
                             "running statistics",
         chapter="9.6",
         description="A deep MLP at high learning rates with and without BatchNorm1d; the "
                     "chapter's gradient γ/√(σ²+ε)·∂L/∂y against the training-mode gradient "
                     "(exact in eval mode, off by √(2/(m−2))); running statistics.")
def run_batch_norm(ctx):
    """Chapter 9.6, batch normalization."""
    with threadpool_limits(limits=1, user_api="blas"):
        runs, largest = high_lr_comparison(ctx, "bn", "batch norm",
                                           ctx.size([0.1, 0.3, 0.5, 1.0, 2.0, 3.0],
                                                    [CONTROL_LR, HIGH_LR, 2.0]))
        hi, hi2 = runs[("bn", HIGH_LR)], runs[("bn", 2.0)]
        ctx.text(
            f"Batch norm keeps the network trainable far beyond the plain one: at α = "
            f"{HIGH_LR:g} the loss falls to {hi['final']:.3f} with "
            f"{100 * hi['test_acc']:.1f} % test accuracy in evaluation mode (running "
            f"statistics), and at α = 2 to {hi2['final']:.3f}. Normalising each pre-activation "
            "over the batch makes the layer's output invariant to the scale of the weights "
            "feeding it, so a step that inflates them cannot blow up the activations further "
            "on; the effective step on the weights' direction shrinks as they grow.")
        ctx.check(f"α = {HIGH_LR:g}: with batch norm it trains (final loss < {TRAINS_BELOW})",
                  TRAINS_BELOW, hi["final"], cmp="<")
        ctx.check(f"α = 2: with batch norm it trains (final loss < {TRAINS_BELOW})",
                  TRAINS_BELOW, hi2["final"], cmp="<")
        ctx.check(f"α = {HIGH_LR:g}: test accuracy with batch norm ≥ 0.9 (evaluation mode, "
                  "running statistics)", 0.9, hi["test_acc"], cmp=">=")
        ctx.check("batch norm trains at every rate of the sweep (max final loss < "
                  f"{TRAINS_BELOW})", TRAINS_BELOW,
                  worst(r["final"] for (k, _), r in runs.items() if k == "bn"), cmp="<")
        ctx.check("largest trainable learning rate: with batch norm > plain", largest["plain"],
                  largest["batch norm"], cmp=">")
        _bn_gradient(ctx)
        _bn_running(ctx)


def _set_gamma(bn, gamma):
    state = bn.state_dict()
    state["weight"] = np.asarray(gamma, dtype=state["weight"].dtype)
    bn.load_state_dict(state)


def _engine_grad(layer, x, g):
    """∂/∂x of Σ g ⊙ layer(x) by the engine (loss.backward on a Tensor input)."""
    xt = cm.tensor(x, requires_grad=True)
    (layer(xt) * g).sum().backward()
    return np.array(xt.grad)


def _bn_gradient(ctx):
    ctx.status("batch-norm gradient")
    rng = np.random.default_rng(21)
    d = 32
    sizes = [3, 4, 6, 8, 16, 32, 64, 128, 256]
    trials = ctx.size(60, 30)
    eps = 1e-5
    mu = rng.uniform(-3, 3, d)
    sd = rng.uniform(0.5, 3.0, d)
    gamma = rng.uniform(0.5, 2.0, d)
    engine_train, engine_eval = [], []
    iso, real, theory = [], [], []
    head = nn.Linear(d, 1, rng=22)
    w_true = rng.standard_normal((d, 1))
    bn = nn.BatchNorm1d(d, eps=eps)
    _set_gamma(bn, gamma)
    for m in sizes:
        num = den = num_r = den_r = 0.0
        for t in range(trials):
            x = mu + sd * rng.standard_normal((m, d))
            g = rng.standard_normal((m, d))
            true = nn.batchnorm_train_grad(g, x, gamma, eps)
            chap = nn.batchnorm_chapter_grad(g, x, gamma, eps)
            scale = gamma / np.sqrt(x.var(axis=0) + eps)  # per column: γ/√(σ²_B + ε)
            num += float(np.sum(((chap - true) / scale) ** 2))
            den += float(np.sum((true / scale) ** 2))
            # ∂L/∂y from a real loss: y = BN(x) → Linear → MSE against a linear target
            target = (x - mu) / sd @ w_true + 0.1 * rng.standard_normal((m, 1))
            yv = np.asarray(bn.train()(x).data)
            gr = np.asarray(cm.grad(lambda y, _t=target: cm.losses.mse(_t, head(y)))(yv))
            true_r = nn.batchnorm_train_grad(gr, x, gamma, eps)
            chap_r = nn.batchnorm_chapter_grad(gr, x, gamma, eps)
            num_r += float(np.sum(((chap_r - true_r) / scale) ** 2))
            den_r += float(np.sum((true_r / scale) ** 2))
            if t == 0:  # the engine, in both modes
                bn.train()
                eng = _engine_grad(bn, x, g)
                engine_train.append(float(np.max(np.abs(eng - true)) / np.max(np.abs(true))))
                bn.eval()
                eng = _engine_grad(bn, x, g)
                chap_eval = nn.batchnorm_chapter_grad(g, x, gamma, eps, var=bn.running_var)
                engine_eval.append(float(np.max(np.abs(eng - chap_eval))
                                         / np.max(np.abs(chap_eval))))
                bn.train()
        iso.append(float(np.sqrt(num / den)))
        real.append(float(np.sqrt(num_r / den_r)))
        theory.append(float(np.sqrt(2.0 / (m - 2))))
    ratio = np.array(iso) / np.array(theory)
    # sums over the batch: the true gradient's is zero (a common shift changes nothing)
    m = 8
    x = mu + sd * rng.standard_normal((m, d))
    g = rng.standard_normal((m, d))
    true = nn.batchnorm_train_grad(g, x, gamma, eps)
    chap = nn.batchnorm_chapter_grad(g, x, gamma, eps)
    sum_true = float(np.max(np.abs(true.sum(axis=0))) / np.max(np.abs(true)))
    sum_chap = float(np.max(np.abs(chap.sum(axis=0))) / np.max(np.abs(chap)))
    i4 = sizes.index(4)

    ctx.text(
        "The chapter gives, \"during training\", ∂L/∂x_i = ∂L/∂y_i · γ/√(σ²_B + ε). That is "
        "the derivative with the batch mean μ_B and variance σ²_B held fixed. In training "
        "they are functions of every x_i in the batch (∂μ_B/∂x_i = 1/m, ∂σ²_B/∂x_i = "
        "2(x_i − μ_B)/m), and the true gradient is γ/√(σ²_B + ε) · (g − mean(g) − x̂·mean(g "
        "x̂)), g = ∂L/∂y: the chapter's formula minus the projection of g onto the constant "
        "vector and onto x̂ (per feature, over the batch). In evaluation mode the running "
        "statistics are constants and the chapter's formula is exact. Measured: the engine's "
        "gradient (`backward()` through `cm.nn.BatchNorm1d`) against the closed forms "
        "`cm.nn.batchnorm_train_grad` and `batchnorm_chapter_grad`, and the relative error "
        "‖chapter − true‖/‖true‖ against the batch size m, pooled over "
        f"{d} features × {trials} batches (each feature column divided by its common factor "
        "γ/√(σ²_B + ε) first, so that no column with a tiny batch variance dominates the "
        "pool). For an isotropic g, the projection removes 2 of m "
        "dimensions, so E‖Pg‖²/E‖(I − P)g‖² = 2/(m − 2): the error is √(2/(m − 2)), "
        f"{theory[i4]:.0%} at m = 4 (measured {iso[i4]:.0%}) and still "
        f"{theory[-1]:.1%} at m = {sizes[-1]}. With g from a real loss (BN → Linear → MSE "
        "against a target that depends on x) g leans towards x̂ and the error is larger "
        f"({real[i4]:.0%} at m = 4, {real[-1]:.0%} at m = {sizes[-1]}). The true gradient sums "
        f"to zero over the batch (relative {sum_true:.1e}: shifting every x_i alike changes "
        f"nothing); the chapter's does not ({sum_chap:.2f}).")
    ctx.table(["batch size m", "theory √(2/(m−2))", "measured, isotropic g", "measured / theory",
               "measured, g from a loss", "engine (train) vs closed form",
               "engine (eval) vs chapter's formula"],
              [[m_, theory[i], iso[i], ratio[i], real[i], engine_train[i], engine_eval[i]]
               for i, m_ in enumerate(sizes)],
              caption="The chapter's batch-norm gradient against the true training-mode "
                      "gradient (relative errors)")
    ctx.check("training mode: engine gradient = closed form γ/√(σ²+ε)(g − ḡ − x̂·mean(g x̂)), "
              "max rel. diff. over all m", 0.0, worst(engine_train), atol=1e-12)
    ctx.check("evaluation mode: engine gradient = the chapter's γ/√(running σ² + ε)·g, max rel. "
              "diff. over all m", 0.0, worst(engine_eval), atol=1e-12)
    ctx.check("training mode, m = 4: the chapter's formula is off by > 10 % (relative)", 0.1,
              iso[i4], cmp=">")
    ctx.check("relative error of the chapter's formula = √(2/(m−2)) within 10 % (isotropic g, "
              "every m)", (0.9, 1.1), ratio, cmp="between")
    ctx.check("true training-mode gradient sums to 0 over the batch (relative)", 0.0, sum_true,
              atol=1e-12)
    ctx.check("... the chapter's does not (relative batch sum > 0.1)", 0.1, sum_chap, cmp=">")
    ctx.metric("batch_sizes", sizes)
    ctx.metric("chapter_grad_rel_error_isotropic", iso)
    ctx.metric("chapter_grad_rel_error_from_loss", real)
    ctx.metric("engine_train_vs_closed_form", worst(engine_train))
    ctx.metric("engine_eval_vs_chapter", worst(engine_eval))

    fig, ax = viz.new_figure(size=(7.2, 4.4))
    viz.line_plot(ax, sizes, {"isotropic ∂L/∂y (measured)": iso,
                              "∂L/∂y from an MSE loss (measured)": real},
                  logx=True, logy=True, xlabel="batch size m",
                  ylabel="‖chapter − true‖ / ‖true‖",
                  title="The chapter's batch-norm gradient in training mode")
    viz.reference_line(ax, sizes, theory, label="theory √(2/(m − 2))")
    ax.axhline(0.1, color="0.6", lw=0.8, ls=":")
    ax.legend(fontsize=8)
    ctx.figure(fig, "gradient-error",
               "Relative error of ∂L/∂y·γ/√(σ²_B+ε) against the true training-mode gradient. "
               "It falls only like 1/√m: the two terms it leaves out (the batch mean of g and "
               "its projection on x̂) are each O(1/√m) of g. In evaluation mode (running "
               "statistics) the chapter's formula is exact (table).")


def _bn_running(ctx):
    ctx.status("running statistics")
    rng = np.random.default_rng(31)
    n, d, m = 20_000, 6, 32
    mom = 0.1
    mu = np.array([-3.0, -1.0, 0.0, 0.5, 2.0, 5.0])
    sd = np.array([0.5, 1.0, 2.0, 0.3, 3.0, 1.0])
    Z = mu + sd * rng.standard_normal((n, d))
    mu_hat, var_hat = Z.mean(axis=0), Z.var(axis=0)
    steps = ctx.size(400, 250)
    tail = 150
    bn = nn.BatchNorm1d(d, momentum=mom)
    bn.train()
    rm, rv = [bn.running_mean.copy()], [bn.running_var.copy()]
    with cm.no_grad():
        for _ in range(steps):
            bn(Z[rng.choice(n, m, replace=False)])
            rm.append(bn.running_mean.copy())
            rv.append(bn.running_var.copy())
    rm, rv = np.array(rm), np.array(rv)
    # stationary spread of an EMA of i.i.d. batch statistics: √(mom/(2 − mom)) × their sd
    ema = np.sqrt(mom / (2 - mom))
    sd_mean = ema * np.sqrt(var_hat / m)
    sd_var = ema * var_hat * np.sqrt(2.0 / (m - 1))  # normal data: Var(s²) = 2σ⁴/(m − 1)
    z_mean = float(np.max(np.abs(rm[-1] - mu_hat) / sd_mean))
    z_var = float(np.max(np.abs(rv[-1] - var_hat) / sd_var))
    spread = float(np.sqrt(np.mean(((rm[-tail:] - mu_hat) / sd_mean) ** 2)))
    spread_v = float(np.sqrt(np.mean(((rv[-tail:] - var_hat) / sd_var) ** 2)))
    # the transient: E[r_k] − μ = (1 − mom)^k (r_0 − μ)
    k = np.arange(steps + 1)
    bias_pred = (1 - mom) ** k[:, None] * (0.0 - mu_hat)
    k20 = 20  # still in the transient: (1 − mom)^20 = 0.12
    sd_k20 = sd_mean * np.sqrt(1 - (1 - mom) ** (2 * k20))
    z_trans = float(np.max(np.abs(rm[k20] - mu_hat - bias_pred[k20]) / sd_k20))
    z_no_bias = float(np.max(np.abs(rm[k20] - mu_hat) / sd_k20))
    bn.eval()
    with cm.no_grad():
        out = np.asarray(bn(Z).data)
    eval_mean = float(np.max(np.abs(out.mean(axis=0))))
    eval_var = out.var(axis=0)
    ctx.text(
        f"Running statistics. A BatchNorm1d(momentum = {mom}) is fed {steps} training-mode "
        f"batches of {m} rows drawn from a fixed data set of {n} rows whose six features have "
        "means from −3 to 5 and standard deviations from 0.3 to 3. Each step sets r ← (1 − "
        "momentum)·r + momentum·(batch statistic), the mean and the unbiased variance "
        "m/(m − 1)·σ²_B, from r = 0 and 1. So E[r_k] − μ = (1 − momentum)^k (r_0 − μ): the "
        f"start is forgotten geometrically (at step {k20} the running mean is still "
        f"{z_no_bias:.0f} noise standard deviations from the data mean, and within "
        f"{z_trans:.1f} of the predicted biased value), and then r "
        "fluctuates around the data statistic with the spread of an exponential moving "
        "average of independent batch statistics, √(momentum/(2 − momentum)) times theirs "
        f"(√(σ²/m) for the mean, σ²√(2/(m − 1)) for the variance of normal data). Over the "
        f"last {tail} steps the measured RMS deviation is {spread:.2f} (mean) and "
        f"{spread_v:.2f} (variance) of the predicted spread. In evaluation mode the layer "
        "then standardises the whole data set: per-feature mean within "
        f"{eval_mean:.3f} of 0, variance {eval_var.min():.3f} to {eval_var.max():.3f}.")
    ctx.check(f"step {k20}, in the transient: running mean = μ + (1 − mom)^k (r₀ − μ) within 5 "
              "predicted standard deviations (max |z|)", 5.0, z_trans, cmp="<=")
    ctx.check(f"after {steps} steps: running mean = data mean within 5 predicted EMA standard "
              "deviations (max |z| over features)", 5.0, z_mean, cmp="<=")
    ctx.check(f"after {steps} steps: running variance = data variance within 5 predicted "
              "standard deviations (max |z|)", 5.0, z_var, cmp="<=")
    ctx.check(f"RMS deviation of the running mean over the last {tail} steps / predicted "
              "EMA spread √(mom/(2−mom))·σ/√m", (0.7, 1.3), spread, cmp="between")
    ctx.check(f"RMS deviation of the running variance over the last {tail} steps / predicted "
              "spread", (0.7, 1.3), spread_v, cmp="between")
    ctx.check("evaluation mode on the data: per-feature variance ≈ 1 (within 0.1)", (0.9, 1.1),
              eval_var, cmp="between")
    ctx.metric("running_mean_final", rm[-1].tolist())
    ctx.metric("data_mean", mu_hat.tolist())
    ctx.metric("running_var_final", rv[-1].tolist())
    ctx.metric("data_var", var_hat.tolist())
    ctx.metric("rms_deviation_over_predicted", {"mean": spread, "var": spread_v})

    fig, axes = viz.new_figure(1, 2, size=(11.5, 4.2))
    for j in range(d):
        c = viz.COLORS[j % len(viz.COLORS)]
        axes[0].plot(k, np.abs(rm[:, j] - mu_hat[j]) / sd[j], color=c, lw=0.9,
                     label=f"μ = {mu[j]:g}, σ = {sd[j]:g}")
        axes[0].plot(k, np.abs(bias_pred[:, j]) / sd[j], "--", color=c, lw=0.8)
    floor = float(ema / np.sqrt(m))
    axes[0].axhline(floor, color="0.3", lw=1.0, ls=":")
    axes[0].set_yscale("log")
    axes[0].set_ylim(floor / 100, 20.0)
    axes[0].set_xlabel("training step k")
    axes[0].set_ylabel("|running mean − data mean| / σ")
    axes[0].set_title("Running mean: (1 − momentum)^k transient (dashed), then the EMA noise "
                      "floor (dotted)", fontsize=8.5)
    axes[0].grid(True, alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    for j in range(d):
        c = viz.COLORS[j % len(viz.COLORS)]
        axes[1].plot(k, rv[:, j] / var_hat[j], color=c, lw=0.9)
    axes[1].axhline(1.0, color="0.3", lw=1.0)
    axes[1].fill_between(k, 1 - 2 * ema * np.sqrt(2 / (m - 1)), 1 + 2 * ema * np.sqrt(2 / (m - 1)),
                         color="0.5", alpha=0.2, label="±2 predicted sd")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("training step k")
    axes[1].set_ylabel("running variance / data variance")
    axes[1].set_title("Running variance (from 1) against the data variance", fontsize=9)
    axes[1].grid(True, alpha=0.3)
    axes[1].legend(fontsize=8)
    ctx.figure(fig, "running-stats",
               "The running statistics converge geometrically to the data's and then "
               "fluctuate within the predicted EMA band; evaluation mode uses them, so a "
               "trained network's test-time output no longer depends on the batch.")


# =========================================================================================
# layer norm
# =========================================================================================

@section("layer-norm", title="Layer normalization: high learning rates, per-example statistics, "
                             "gradients",
         chapter="9.6",
         description="A deep MLP at high learning rates with and without LayerNorm; mean 0 and "
                     "variance σ²/(σ²+ε) per example; the gradient against central differences "
                     "and as batch norm of the transpose; no dependence on the batch.")
def run_layer_norm(ctx):
    """Chapter 9.6, layer normalization."""
    with threadpool_limits(limits=1, user_api="blas"):
        runs, _ = high_lr_comparison(ctx, "ln", "layer norm",
                                     ctx.size([0.1, 0.3, 0.5, 1.0, 2.0],
                                              [CONTROL_LR, 0.5, HIGH_LR]),
                                     curve_lrs=(HIGH_LR, CONTROL_LR, 0.5))
        mid, hi = runs[("ln", 0.5)], runs[("ln", HIGH_LR)]
        text = (
            f"Layer norm widens the range of usable rates too, but less than batch norm (see "
            f"the batch-norm section): at α = 0.5 it trains to {mid['final']:.3f} "
            f"({100 * mid['test_acc']:.1f} % test accuracy), at α = {HIGH_LR:g} it is still "
            f"learning ({hi['final']:.3f}, far below chance ln 10 = 2.30, where the plain "
            "network has failed)")
        if ("ln", 2.0) in runs:
            text += f", and at α = 2 it stalls ({runs[('ln', 2.0)]['final']:.2f})"
        ctx.text(text + ". Normalising each example over its 64 features makes a layer "
                 "invariant to the overall scale of the weights before it, but not to each unit's "
                 "scale as batch norm is: a step that inflates a few units' weights still "
                 "shifts the whole layer, one plausible reason for its narrower range here.")
        ctx.check(f"α = 0.5: with layer norm it trains (final loss < {TRAINS_BELOW})",
                  TRAINS_BELOW, mid["final"], cmp="<")
        ctx.check("α = 0.5: test accuracy with layer norm ≥ 0.9", 0.9, mid["test_acc"],
                  cmp=">=")
        ctx.check(f"α = {HIGH_LR:g}: with layer norm still learning (final loss < 1, chance "
                  "2.30)", 1.0, hi["final"], cmp="<")
        _ln_statistics(ctx)
        _ln_gradient(ctx)
        _ln_batch(ctx)


def _ln_statistics(ctx):
    ctx.status("per-example statistics")
    rng = np.random.default_rng(41)
    d, eps = 64, 1e-5
    scales = np.array([1e-4, 1e-3, 3e-3, 1e-2, 0.1, 1.0, 10.0, 1e3])
    offsets = rng.uniform(-5, 5, len(scales))
    X = offsets[:, None] + scales[:, None] * rng.standard_normal((len(scales), d))
    ln = nn.LayerNorm(d, eps=eps, elementwise_affine=False)
    out = np.asarray(ln(X))
    out = np.asarray(out.data if isinstance(out, cm.Tensor) else out)
    s2 = X.var(axis=1)
    pred = s2 / (s2 + eps)
    means = out.mean(axis=1)
    vars_ = out.var(axis=1)
    big = s2 >= 1000 * eps  # then 1 − σ²/(σ² + ε) < 1e-3
    rows = [[f"{s:g}", float(o), float(s2_), float(me), float(v), float(p)]
            for s, o, s2_, me, v, p in zip(scales, offsets, s2, means, vars_, pred)]
    ctx.text(
        "Layer norm normalises each example over its own features: μ_l and σ²_l over the d "
        "entries of a row, x̂ = (x − μ_l)/√(σ²_l + ε). Before the affine map γx̂ + β "
        "(`elementwise_affine=False`), every row has mean 0 and variance σ²_l/(σ²_l + ε) "
        f"exactly: 1 for rows whose spread is well above √ε ≈ {np.sqrt(eps):.1e}, and less for "
        "rows that are nearly constant, which ε keeps from being blown up into noise. Measured "
        f"on {len(scales)} rows of d = {d} with spreads from 1e-4 to 1e3 and random offsets.")
    ctx.table(["row spread", "row offset", "σ²_l of the row", "output mean", "output variance",
               "σ²_l/(σ²_l + ε)"], rows,
              caption=f"LayerNorm({d}, eps={eps:g}) without affine, per example")
    ctx.check("every row: output mean 0 (max |mean|)", 0.0, float(np.max(np.abs(means))),
              atol=1e-12)
    ctx.check("every row: output variance = σ²_l/(σ²_l + ε) (max rel. diff.)", 0.0,
              float(np.max(np.abs(vars_ / pred - 1))), atol=1e-10)
    ctx.check("rows with σ²_l ≥ 1000 ε: output variance = 1 within 1e-3", 0.0,
              float(np.max(np.abs(vars_[big] - 1))), atol=1e-3)
    ctx.check("a nearly constant row (spread 1e-4) is not inflated to variance 1: variance < "
              "0.01", 0.01, float(vars_[0]), cmp="<")
    ctx.metric("output_variance_per_row", vars_.tolist())


def _ln_gradient(ctx):
    ctx.status("layer-norm gradient")
    rng = np.random.default_rng(42)
    n, d, eps = 4, 8, 1e-5
    x = rng.uniform(-2, 2, (n, d)) * rng.uniform(0.5, 2.0, (n, 1))
    w = rng.standard_normal((n, d))
    gamma = rng.uniform(0.5, 1.5, d)
    beta = rng.standard_normal(d)
    ln = nn.LayerNorm(d, eps=eps)
    params = {"weight": gamma, "bias": beta}

    def f(x_, p):
        return cm.sum(w * nn.functional_call(ln, p, x_))

    gx, gp = cm.grad(f, argnums=(0, 1))(x, params)
    gx = np.asarray(gx)
    # central differences, entry by entry
    h = 1e-5
    fd = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        fd[idx] = (float(f(x + e, params)) - float(f(x - e, params))) / (2 * h)
    fd_w = np.zeros(d)
    for j in range(d):
        e = np.zeros(d)
        e[j] = h
        fd_w[j] = (float(f(x, {"weight": gamma + e, "bias": beta}))
                   - float(f(x, {"weight": gamma - e, "bias": beta}))) / (2 * h)
    rel_x = float(np.max(np.abs(gx - fd)) / np.max(np.abs(gx)))
    rel_w = float(np.max(np.abs(np.asarray(gp["weight"]) - fd_w)) / np.max(np.abs(fd_w)))
    report = cm.check_grad(f, x, params, raise_on_failure=False)
    # layer norm of x is batch norm of xᵀ: the same closed-form gradient, transposed
    engine = _engine_grad(nn.LayerNorm(d, eps=eps, elementwise_affine=False), x, w * gamma)
    closed = nn.batchnorm_train_grad((w * gamma).T, x.T, eps=eps).T
    rel_closed = float(np.max(np.abs(engine - closed)) / np.max(np.abs(closed)))
    rel_gx = float(np.max(np.abs(gx - closed)) / np.max(np.abs(closed)))
    naive = w * gamma / np.sqrt(x.var(axis=1, keepdims=True) + eps)
    rel_naive = float(np.linalg.norm(naive - gx) / np.linalg.norm(gx))
    ctx.text(
        "The gradient. Like training-mode batch norm, layer norm differentiates through its "
        "statistics; they are only taken over the other axis. So its gradient is batch norm's "
        "closed form applied to the transpose: ∂L/∂x = (1/√(σ²_l + ε))(ĝ − mean_l(ĝ) − "
        "x̂·mean_l(ĝ x̂)) with ĝ = γ ⊙ ∂L/∂y and the means over each row's features; "
        "`cm.nn.batchnorm_train_grad(ĝᵀ, xᵀ)ᵀ` reproduces the engine's gradient. Against "
        f"central differences (h = {h:g}) on a {n}×{d} input with a random γ, β and the loss "
        f"Σ w ⊙ LayerNorm(x): the gradient in x agrees to {rel_x:.1e} and in γ to {rel_w:.1e} "
        "(relative), and `cm.check_grad` (reverse, forward, central differences, first and "
        f"second order) reports a max relative error of {report.max_rel_error:.1e}. The "
        "chapter-style shortcut γ/√(σ² + ε)·∂L/∂y, statistics frozen, is off by "
        f"{rel_naive:.0%} here, with only {d} features per row (for an isotropic ∂L/∂y the "
        f"batch-norm section's √(2/(d − 2)) = {np.sqrt(2 / (d - 2)):.0%}).")
    ctx.check("∂L/∂x: reverse mode = central differences (max rel. diff.)", 0.0, rel_x,
              atol=1e-8)
    ctx.check("∂L/∂γ: reverse mode = central differences (max rel. diff.)", 0.0, rel_w,
              atol=1e-8)
    ctx.check("cm.check_grad (x, γ, β; rev, fwd, central differences; orders 1 and 2) passes",
              True, bool(report.passed), cmp="==")
    ctx.check("engine gradient = batch norm's closed form on the transpose (max rel. diff.)",
              0.0, worst(rel_closed, rel_gx), atol=1e-12)
    ctx.check("statistics-frozen shortcut γ/√(σ²+ε)·∂L/∂y is not the gradient (rel. error "
              "> 10 %)", 0.1, rel_naive, cmp=">")
    ctx.metric("central_difference_rel_error", {"x": rel_x, "weight": rel_w})
    ctx.metric("check_grad_max_rel_error", report.max_rel_error)
    ctx.metric("frozen_statistics_rel_error", rel_naive)


def _ln_batch(ctx):
    ctx.status("batch independence")
    rng = np.random.default_rng(43)
    d = 16
    X = 2.0 + 3.0 * rng.standard_normal((256, d))
    ln = nn.LayerNorm(d)
    bn = nn.BatchNorm1d(d)

    def val(layer, x):
        o = layer(x)
        return np.asarray(o.data if isinstance(o, cm.Tensor) else o)

    full = val(ln, X)
    alone = np.vstack([val(ln, X[i:i + 1]) for i in range(8)])
    small = val(ln, X[:8])
    ln_diff = float(max(np.max(np.abs(alone - full[:8])), np.max(np.abs(small - full[:8]))))
    ln.eval()
    ln_eval = float(np.max(np.abs(val(ln, X) - full)))
    bn_full = val(bn, X)
    bn_small = val(bn, X[:8])
    bn_diff = float(np.max(np.abs(bn_small - bn_full[:8])))
    ctx.text(
        "No batch in sight: an example's layer-norm output depends on that example alone. The "
        "first 8 rows of a batch of 256, normalised alone, in a batch of 8 and in the batch of "
        f"256, agree to {ln_diff:.1e}, and evaluation mode is the same function "
        f"({ln_eval:.1e}); BatchNorm1d in training mode changes the same rows' outputs by up to "
        f"{bn_diff:.2f} between the two batches. This is why layer norm suits batches of one, "
        "sequences of varying length and the transformer blocks of the attention section, "
        "and needs no running statistics.")
    ctx.check("layer norm: the same rows alone, in a batch of 8 and of 256 give the same output "
              "(max abs. diff.)", 0.0, ln_diff, atol=1e-14)
    ctx.check("layer norm: evaluation mode = training mode (max abs. diff.)", 0.0, ln_eval,
              atol=0.0)
    ctx.check("batch norm (training mode): the same rows in a batch of 8 and of 256 differ "
              "(max abs. diff. > 0.05)", 0.05, bn_diff, cmp=">")
    ctx.metric("layer_norm_batch_dependence", ln_diff)
    ctx.metric("batch_norm_batch_dependence", bn_diff)
