"""Tour section ``dropout`` (chapter 9.4, dropout regularization).

A wide MLP on a small subset of scikit-learn's digits (150 training images, the other 1647
for testing), trained with :func:`calcml.train` with and without :class:`calcml.nn.Dropout`
over three seeds: without dropout it fits the training set perfectly and generalises worse;
with dropout the test accuracy is higher and the train–test gap smaller.  The same comparison
with 20 % of the training labels replaced at random, where fitting the training set means
memorising noise, shows the effect at full size.  Then the inference rule: Monte Carlo
estimates of E[training-mode output] against the evaluation-mode output for inverted and
classic dropout, and the chapter's "a = p·a at inference, p the dropout probability" measured
against the keep probability 1 − p, on a layer and on a trained network.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.neighbors import KNeighborsClassifier
from threadpoolctl import threadpool_limits

import calcml as cm
from calcml import viz
from calcml.tour import section
from calcml.tour.context import least

nn = cm.nn

N_TRAIN = 150
WIDTH = 128
P_DROP = 0.5
LABEL_NOISE = 0.2
LR = 1e-3
BATCH = 32
EVAL_EVERY = 10


def digits():
    """Digits as (X in [0, 1], labels)."""
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


def split(X, y, seed, noise=0.0):
    """``N_TRAIN`` random training images (from ``seed``), the rest for testing; with
    ``noise`` > 0 that fraction of the training labels is replaced by uniform random labels
    (possibly the right one)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(X))
    tr, te = perm[:N_TRAIN], perm[N_TRAIN:]
    ytr = y[tr].copy()
    if noise:
        flip = rng.random(N_TRAIN) < noise
        ytr[flip] = rng.integers(0, 10, int(flip.sum()))
    return X[tr], ytr, X[te], y[te]


def mlp(seed, p=0.0, mode="inverted", dropout_layers=None):
    """64-WIDTH-WIDTH-10 ReLU network, with Dropout(p) after each hidden layer when p > 0
    (or when ``dropout_layers`` is true)."""
    with_dropout = p > 0 if dropout_layers is None else dropout_layers
    layers = [nn.Linear(64, WIDTH, rng=10 * seed + 1), nn.ReLU()]
    if with_dropout:
        layers.append(nn.Dropout(p, mode=mode, rng=10 * seed + 5))
    layers += [nn.Linear(WIDTH, WIDTH, rng=10 * seed + 2), nn.ReLU()]
    if with_dropout:
        layers.append(nn.Dropout(p, mode=mode, rng=10 * seed + 6))
    layers.append(nn.Linear(WIDTH, 10, rng=10 * seed + 3))
    return nn.Sequential(*layers)


def outputs(model, X):
    model.eval()
    with cm.no_grad():
        out = model(X)
    return np.asarray(out.data if isinstance(out, cm.Tensor) else out)


def accuracy(model, X, y):
    return float(np.mean(np.argmax(outputs(model, X), axis=1) == y))


def fit(model, Xtr, ytr, Xte, yte, epochs, seed):
    """Train with Adam; every ``EVAL_EVERY`` epochs record train and test accuracy (eval
    mode).  Returns the curves and the final accuracies."""
    curve = {"epoch": [], "train": [], "test": []}

    def record(run, epoch, logs):
        if epoch % EVAL_EVERY == 0 or epoch == epochs:
            curve["epoch"].append(epoch)
            curve["train"].append(accuracy(model, Xtr, ytr))
            curve["test"].append(accuracy(model, Xte, yte))

    hist = cm.train(model, cm.losses.cross_entropy, cm.optim.adam(LR), Xtr, ytr,
                    epochs=epochs, batch_size=BATCH, rng=seed, progress=False,
                    callbacks=[cm.train.LambdaCallback(on_epoch_end=record)])
    return {"curve": curve, "train": curve["train"][-1], "test": curve["test"][-1],
            "loss": hist.train_loss}


@section("dropout", title="Dropout: less overfitting, and the inference scaling",
         chapter="9.4",
         description="A wide MLP on 150 digits overfits without dropout and generalises "
                     "better with it (3 seeds; clean and noisy labels); E[train output] = "
                     "eval output, with the keep probability 1 − p, not p.")
def run(ctx):
    """Chapter 9.4, dropout."""
    # small matrices: one BLAS thread is as fast, and immune to oversubscription
    with threadpool_limits(limits=1, user_api="blas"):
        X, y = digits()
        results = _overfitting(ctx, X, y)
        _plot_curves(ctx, results)
        _scaling(ctx)
        _network_scaling(ctx, X, y)


def _overfitting(ctx, X, y):
    seeds = list(range(ctx.size(3, 2)))
    epochs = 150
    settings = {"clean": 0.0, "noisy": LABEL_NOISE} if not ctx.quick else {"noisy": LABEL_NOISE}
    results = {}
    rows = []
    knn = [KNeighborsClassifier(1).fit(a, b).score(c, d) for a, b, c, d in
           (split(X, y, seed) for seed in seeds)]
    ctx.metric("one_nearest_neighbour_test_accuracy", knn)
    for setting, noise in settings.items():
        for seed in seeds:
            Xtr, ytr, Xte, yte = split(X, y, seed, noise)
            for p in (0.0, P_DROP):
                ctx.status(f"{setting} labels, seed {seed}, p = {p}")
                r = fit(mlp(seed, p), Xtr, ytr, Xte, yte, epochs, seed)
                results[(setting, seed, p)] = r
            r0, r1 = results[(setting, seed, 0.0)], results[(setting, seed, P_DROP)]
            rows.append([setting, seed, r0["train"], r0["test"], r0["train"] - r0["test"],
                         r1["train"], r1["test"], r1["train"] - r1["test"]])
    summary = {}
    for setting in settings:
        def mean(key, p, _s=setting):
            return float(np.mean([results[(_s, s, p)][key] for s in seeds]))

        s = {f"{k}_{tag}": mean(k, p) for k in ("train", "test") for p, tag in
             ((0.0, "no_dropout"), (P_DROP, "dropout"))}
        s["gap_no_dropout"] = s["train_no_dropout"] - s["test_no_dropout"]
        s["gap_dropout"] = s["train_dropout"] - s["test_dropout"]
        s["test_gain_per_seed"] = [results[(setting, sd, P_DROP)]["test"]
                                   - results[(setting, sd, 0.0)]["test"] for sd in seeds]
        summary[setting] = s
        ctx.metric(f"{setting}_labels", s)
        what = "clean labels" if setting == "clean" else \
            f"{int(100 * LABEL_NOISE)} % random training labels"
        ctx.check(f"{what}: without dropout the training set is fitted (mean train accuracy "
                  f"≥ 0.99 over {len(seeds)} seeds)", 0.99, s["train_no_dropout"], cmp=">=")
        ctx.check(f"{what}: mean test accuracy, with dropout > without", s["test_no_dropout"],
                  s["test_dropout"], cmp=">")
        ctx.check(f"{what}: test accuracy with dropout > without, on every seed (min gain)",
                  0.0, least(s["test_gain_per_seed"]), cmp=">")
        ctx.check(f"{what}: mean train − test gap, with dropout < without", s["gap_no_dropout"],
                  s["gap_dropout"], cmp="<")

    n_params = mlp(0).num_parameters()
    text = (
        f"The setting of overfitting: {N_TRAIN} training images of the digits (8×8 pixels "
        f"scaled to [0, 1], 10 classes), the other {1797 - N_TRAIN} for testing, and a network "
        f"far larger than the data, 64-{WIDTH}-{WIDTH}-10 with ReLU ({n_params:,} "
        f"parameters for {N_TRAIN} examples), trained by `cm.train` with Adam (α = {LR:g}), "
        f"mini-batches of {BATCH}, {epochs} epochs, cross-entropy. With dropout, "
        f"`cm.nn.Dropout({P_DROP})` (inverted: scale by 1/(1 − p) in training, identity at "
        "inference) follows each hidden layer. Each seed draws its own split, initialisation, "
        "masks and batch order; with and without dropout share them all. ")
    if "clean" in summary:
        c = summary["clean"]
        text += (
            f"On the clean labels, without dropout the network fits the training set "
            f"({100 * c['train_no_dropout']:.1f} %) and reaches {100 * c['test_no_dropout']:.1f} "
            f"% on the test set (gap {100 * c['gap_no_dropout']:.1f} points); with dropout "
            f"{100 * c['test_dropout']:.1f} % (gap {100 * c['gap_dropout']:.1f} points), better "
            "on every seed. The gain is small: the digits are easy (a 1-nearest-neighbour "
            f"classifier on the same {N_TRAIN} images reaches {100 * np.mean(knn):.1f} %), and "
            "the clean training set leaves little to overfit to. ")
    nz = summary["noisy"]
    text += (
        f"The effect shows at full size when {int(100 * LABEL_NOISE)} % of the training labels "
        "are replaced at random: fitting the training set then means memorising the wrong "
        f"labels. Without dropout the network does ({100 * nz['train_no_dropout']:.1f} % "
        f"training accuracy on the noisy labels) and falls to {100 * nz['test_no_dropout']:.1f} "
        f"% on the (clean) test set; with dropout it memorises less "
        f"({100 * nz['train_dropout']:.1f} %) and reaches {100 * nz['test_dropout']:.1f} % "
        f"(gap {100 * nz['gap_no_dropout']:.1f} → {100 * nz['gap_dropout']:.1f} points).")
    ctx.text(text)
    ctx.table(["labels", "seed", "train acc., no dropout", "test acc., no dropout", "gap",
               f"train acc., dropout {P_DROP}", "test acc., dropout", "gap"], rows,
              caption="Final accuracies (evaluation mode) per seed")
    return {"results": results, "seeds": seeds, "settings": list(settings), "epochs": epochs}


def _plot_curves(ctx, res):
    settings, seeds, results = res["settings"], res["seeds"], res["results"]
    fig, axes = viz.new_figure(1, len(settings), size=(5.4 * len(settings), 4.2), squeeze=False)
    for ax, setting in zip(axes[0], settings, strict=True):
        for c, (p, name) in enumerate(((0.0, "no dropout"), (P_DROP, f"dropout {P_DROP}"))):
            ep = results[(setting, seeds[0], p)]["curve"]["epoch"]
            for key, style in (("train", "--"), ("test", "-")):
                curves = np.array([results[(setting, s, p)]["curve"][key] for s in seeds])
                ax.plot(ep, curves.mean(axis=0), style, color=viz.COLORS[c], lw=1.8,
                        label=f"{name}, {key}")
                for cv in curves:
                    ax.plot(ep, cv, style, color=viz.COLORS[c], lw=0.5, alpha=0.4)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (evaluation mode)")
        title = "clean labels" if setting == "clean" else \
            f"{int(100 * LABEL_NOISE)} % random training labels (test labels clean)"
        ax.set_title(f"{N_TRAIN} digits, {title}", fontsize=9.5)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    ctx.figure(fig, "accuracy",
               f"Training (dashed) and test (solid) accuracy during training, mean over "
               f"{len(seeds)} seeds (thin: each seed). Without dropout the training accuracy "
               "reaches 100 % and the test accuracy stalls below; dropout keeps the network "
               "from fitting every training example as quickly and lifts the test accuracy. "
               "With noisy labels the test accuracy without dropout peaks early and then falls "
               "as the network memorises the wrong labels; with dropout it stays higher.")


def _mc(layer, a, n):
    """Monte Carlo over n masks: mean and standard error of the training-mode output."""
    layer.train()
    out = layer(np.broadcast_to(a, (n,) + a.shape))
    out = np.asarray(out.data if isinstance(out, cm.Tensor) else out)
    return out.mean(axis=0), out.std(axis=0, ddof=1) / np.sqrt(n)


def _eval(layer, a):
    layer.eval()
    out = layer(a[None])
    return np.asarray(out.data if isinstance(out, cm.Tensor) else out)[0]


def _scaling(ctx):
    ctx.status("inference scaling, Monte Carlo")
    n = ctx.size(40_000, 10_000)
    rng = np.random.default_rng(5)
    a = np.abs(rng.standard_normal(64)) + 0.5  # positive activations (after a ReLU)
    p = 0.2
    rows, z = [], {}
    for i, mode in enumerate(("inverted", "classic")):
        d = nn.Dropout(p, mode=mode, rng=11 + i)
        m, se = _mc(d, a, n)
        e = _eval(d, a)
        z[mode] = float(np.max(np.abs(m - e) / se))
        rows.append([f"Dropout({p}, mode={mode!r})", f"{'a/(1 − p)' if mode == 'inverted' else 'a'}"
                     " on kept units, 0 else", "a" if mode == "inverted" else "(1 − p)·a",
                     float(np.mean(m / a)), float(np.mean(e / a)), z[mode]])
        ctx.check(f"{mode} dropout (p = {p}): E[training output] = evaluation output, max "
                  f"|z| over 64 units ({n} masks)", 5.0, z[mode], cmp="<=")
    # the chapter: a_inference = p·a with p the dropout probability
    d = nn.Dropout(p, mode="classic", rng=15)
    m, se = _mc(d, a, n)
    ratio = float(np.mean(m / (p * a)))
    z_chapter = float(np.min(np.abs(m - p * a) / se))
    rows.append([f"chapter: classic, inference p·a (p = {p})", "a on kept units, 0 else",
                 "p·a", float(np.mean(m / a)), p, z_chapter])
    ctx.check(f"the chapter's p·a (p = {p} the dropout probability): E[training output] / "
              "(p·a) = (1 − p)/p", (1 - p) / p, ratio, rtol=0.01)
    ctx.check("... a mismatch of many standard errors (min |z| over the units)", 100.0,
              z_chapter, cmp=">")
    # through a linear layer: the expectation passes through linear maps exactly
    lin = nn.Linear(64, 8, rng=13)
    d = nn.Dropout(p, rng=14)
    layer = nn.Sequential(d, lin)
    m, se = _mc(layer, a, n)
    e = _eval(layer, a)
    z_lin = float(np.max(np.abs(m - e) / se))
    ctx.check("Dropout then Linear: E[training output] = evaluation output, max |z| over 8 "
              "outputs", 5.0, z_lin, cmp="<=")
    ctx.metric("mc_samples", n)
    ctx.metric("max_z", {**z, "dropout_then_linear": z_lin})
    ctx.metric("chapter_p_scaling_ratio", ratio)

    ps = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    meas = {"inverted": [], "classic": []}
    for i, pp in enumerate(ps):
        for mode in meas:
            m, _ = _mc(nn.Dropout(float(pp), mode=mode, rng=100 + i), a, ctx.size(5000, 2000))
            meas[mode].append(float(np.mean(m / a)))
    ctx.text(
        "Inference. During training each unit is kept with probability q = 1 − p (mask m ~ "
        "Bernoulli(q)), so E[m ⊙ a] = q·a: the network downstream sees q·a on average. At "
        "inference, with no mask, the activations must be scaled by the *keep* probability q "
        "to match (classic dropout), or training divides by q so that inference is the "
        "identity (inverted dropout, the default of `cm.nn.Dropout` and of PyTorch). The table "
        f"measures E[training output]/a by Monte Carlo over {n} masks of a 64-unit layer and "
        "compares with the evaluation output, unit by unit (z = difference / standard error). "
        "The chapter writes the inference rule as a = p·a with p \"the dropout probability\": "
        f"with p = {p} that scales by {p} where training delivered {1 - p:.1f} on average, "
        f"{(1 - p) / p:.0f}× too little (measured ratio {ratio:.4f}); the two agree only at "
        "p = 1/2.")
    ctx.table(["layer", "training output", "evaluation output", "E[train output]/a (MC)",
               "evaluation output / a", "max |z| (last row: min)"], rows,
              caption=f"E[training-mode output] against the evaluation output, {n} masks")

    fig, ax = viz.new_figure(size=(7.0, 4.3))
    ax.plot(ps, 1 - ps, "-", color=viz.COLORS[0], lw=1.5, label="keep probability 1 − p "
            "(classic eval factor)")
    ax.plot(ps, ps, "--", color=viz.COLORS[1], lw=1.5, label="chapter: p (dropout probability)")
    ax.plot(ps, meas["classic"], "o", color=viz.COLORS[0], ms=6,
            label="classic: E[train output]/a, Monte Carlo")
    ax.plot(ps, meas["inverted"], "s", color=viz.COLORS[2], ms=5,
            label="inverted: E[train output]/a (eval factor 1)")
    ax.axhline(1.0, color=viz.COLORS[2], lw=0.8, ls=":")
    ax.set_xlabel("dropout probability p")
    ax.set_ylabel("factor on the activation")
    ax.set_title("What the network sees in training, on average, against the inference rule",
                 fontsize=9.5)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ctx.figure(fig, "scaling",
               "The average training-mode output per unit of activation (points, Monte Carlo) "
               "lies on 1 − p for classic dropout and on 1 for inverted dropout: the inference "
               "factors that match. The chapter's factor p (dashed) matches only at p = 1/2.")


def _network_scaling(ctx, X, y):
    ctx.status("classic dropout, trained network")
    p = 0.2
    epochs = ctx.size(100, 60)
    Xtr, ytr, Xte, yte = split(X, y, 0)
    model = mlp(0, p, mode="classic")
    cm.train(model, cm.losses.cross_entropy, cm.optim.adam(LR), Xtr, ytr, epochs=epochs,
             batch_size=BATCH, rng=0, progress=False)
    state = model.state_dict()
    # the same network evaluated with other inference factors: classic Dropout(r) scales by
    # 1 − r in evaluation, so r = 1 − p gives the chapter's factor p and r = 0 no scaling
    variants = {f"1 − p = {1 - p:.1f} (correct)": p, f"p = {p} (chapter)": 1 - p,
                "1 (no scaling)": 0.0}
    rows, loss = [], {}
    for name, r in variants.items():
        net = mlp(0, r, mode="classic", dropout_layers=True)
        net.load_state_dict(state)
        out = outputs(net, Xte)
        loss[name] = float(cm.losses.cross_entropy(yte, out))
        rows.append([name, float(np.mean(np.argmax(out, 1) == yte)), loss[name]])
    names = list(variants)
    ctx.text(
        f"The same on a trained network: the digits MLP with classic dropout (p = {p}, seed 0, "
        f"{epochs} epochs), evaluated on the test set with three inference factors on the "
        f"hidden activations. The chapter's factor p shrinks each dropout layer's output "
        f"{(1 - p) / p:.0f}-fold against what training delivered, which the ReLU network "
        "passes on (it is positively homogeneous up to its biases): the logits shrink "
        f"towards uniform predictions and the test cross-entropy rises from "
        f"{loss[names[0]]:.3f} to {loss[names[1]]:.3f}. No scaling at all, a factor "
        f"1/(1 − p) = {1 / (1 - p):.2f} too large, costs less here ({loss[names[2]]:.3f}): "
        "with a small p the error is mild, with the chapter's factor it is not.")
    ctx.table(["inference factor on hidden activations", "test accuracy",
               "test cross-entropy"], rows,
              caption=f"Classic dropout (p = {p}), one trained network, three inference rules")
    ctx.check("trained classic-dropout network: test cross-entropy with the factor 1 − p < "
              "with the chapter's p", loss[names[1]], loss[names[0]], cmp="<")
    ctx.metric("classic_network_test_loss", loss)
