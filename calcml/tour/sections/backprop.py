"""Tour section ``backprop`` (chapter 9.2, backpropagation in neural networks).

The chapter's XOR network, 2-4-1 with a sigmoid (and, beside it, a tanh) hidden layer, a
sigmoid output and the mean squared error, trained by full-batch gradient descent with
:func:`calcml.train`: the loss curves over a few seeds, the decision boundary with the four
hidden units' lines, 100 % accuracy.  Then the chapter's δ recursion, written out by
:func:`calcml.nn.backprop` in plain NumPy (δ_L = ∂L/∂a_L ⊙ σ'(z_L), δ_l = (W_{l+1}ᵀδ_{l+1}) ⊙
σ'(z_l), ∂L/∂W_l = δ_l a_{l-1}ᵀ), set against the engine's reverse mode (``loss.backward()``
and ``cm.grad`` of :func:`calcml.nn.functional_call`) layer by layer, and the two places where
the chapter's formulas need care, measured: a softmax output (its Jacobian is not diagonal) and
the bias gradient of a batch (a sum of the per-example δ_l).
"""

from __future__ import annotations

import numpy as np

import calcml as cm
from calcml import viz
from calcml.tour import section
from calcml.tour.context import worst

nn = cm.nn

#: The XOR problem of the chapter: four points, label 1 where exactly one input is 1.
XOR_X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_Y = np.array([[0.0], [1.0], [1.0], [0.0]])
HIDDEN = 4
#: hidden activation -> (module, learning rate of full-batch gradient descent, epochs)
NETS = {"sigmoid": (nn.Sigmoid, 2.0, 1200), "tanh": (nn.Tanh, 1.0, 600)}


def xor_net(hidden, seed):
    """2-4-1: Linear(2, 4), the hidden activation, Linear(4, 1), Sigmoid (Xavier-normal
    weights, zero biases, from ``seed``)."""
    act = NETS[hidden][0]
    return nn.Sequential(nn.Linear(2, HIDDEN, rng=seed, init="xavier_normal"), act(),
                         nn.Linear(HIDDEN, 1, rng=seed + 1000, init="xavier_normal"),
                         nn.Sigmoid())


def binary_accuracy(y_true, y_pred):
    """Fraction of outputs on the right side of 1/2."""
    return float(np.mean((np.asarray(y_pred) > 0.5) == (np.asarray(y_true) > 0.5)))


def predict(model, X):
    with cm.no_grad():
        out = model(X)
    return np.asarray(out.data if isinstance(out, cm.Tensor) else out)


def autodiff_grads(model, X, Y, loss):
    """The engine's gradients of ``loss(Y, model(X))``: ``backward()`` on Tensors, and
    ``cm.grad`` of the module as a pure function of its parameters."""
    model.zero_grad()
    loss(Y, model(X)).backward()
    tape = {n: np.array(p.grad) for n, p in model.named_parameters()}
    params = {n: np.array(p.data) for n, p in model.named_parameters()}
    functional = cm.grad(lambda p: loss(Y, nn.functional_call(model, p, X)))(params)
    model.zero_grad()
    return tape, {n: np.asarray(v) for n, v in functional.items()}


def recursion_grads(model, X, loss_grad, **kw):
    """The δ recursion of :func:`calcml.nn.backprop` on the Linear layers of ``model``,
    returned under the module's parameter names (``"0.weight"``, ``"2.bias"``, ...)."""
    mlp = nn.mlp_from_sequential(model)
    act = kw.pop("activation", mlp["activation"])
    res = nn.backprop(mlp["weights"], mlp["biases"], X, loss_grad, activation=act, **kw)
    idx = [i for i, m in enumerate(model) if isinstance(m, nn.Linear)]
    out = {}
    for k, i in enumerate(idx):
        out[f"{i}.weight"] = res.weight_grads[k]
        out[f"{i}.bias"] = res.bias_grads[k]
    return out, res


def max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k])))) for k in a)


def rel_err(a, b):
    """‖a − b‖ / ‖b‖ over all the entries of two gradient dicts."""
    num = sum(float(np.sum((np.asarray(a[k]) - np.asarray(b[k])) ** 2)) for k in a)
    den = sum(float(np.sum(np.asarray(b[k]) ** 2)) for k in a)
    return float(np.sqrt(num / den))


@section("backprop", title="Backpropagation: XOR and the δ recursion against autodiff",
         chapter="9.2",
         description="XOR with a 2-4-1 sigmoid/tanh MLP (loss curves, decision boundary, "
                     "100 % accuracy); the chapter's δ recursion equal to reverse mode; "
                     "softmax outputs and batch sums.")
def run(ctx):
    """Chapter 9.2, backpropagation."""
    runs = _train_xor(ctx)
    _recursion(ctx, runs)
    _caveats(ctx)


def _train_xor(ctx):
    ctx.status("training XOR")
    seeds = list(range(ctx.size(4, 1)))
    runs = {}
    for hidden, (_, lr, epochs) in NETS.items():
        for seed in seeds:
            model = xor_net(hidden, seed)
            init_state = model.state_dict()
            hist = cm.train(model, cm.losses.mse, cm.optim.sgd(lr), XOR_X, XOR_Y,
                            epochs=epochs, batch_size=4, shuffle=False, progress=False,
                            metrics={"accuracy": binary_accuracy})
            pred = predict(model, XOR_X)
            runs[(hidden, seed)] = {"model": model, "init": init_state, "hist": hist,
                                    "pred": pred, "acc": binary_accuracy(XOR_Y, pred),
                                    "lr": lr, "epochs": epochs}
    main = {h: runs[(h, 0)] for h in NETS}
    for h, r in main.items():
        loss = r["hist"].train_loss
        acc = np.asarray(r["hist"]["accuracy"])
        r["first_100"] = int(np.argmax(acc == 1.0)) + 1 if np.any(acc == 1.0) else None
        ctx.check(f"{h} hidden layer (seed 0): accuracy on the 4 XOR points", 1.0, r["acc"],
                  cmp="==")
        ctx.check(f"{h} hidden layer (seed 0): final MSE ≤ 0.01 (outputs within ~0.1 of the "
                  "targets)", 0.01, loss[-1], cmp="<=")
        ctx.metric(f"{h}_final_mse", loss[-1])
        ctx.metric(f"{h}_outputs", r["pred"].ravel().round(4).tolist())
        ctx.metric(f"{h}_epoch_of_first_100pct_accuracy", r["first_100"])
    # without a hidden layer: the best affine fit of XOR (least squares) is the constant 1/2
    A = np.column_stack([XOR_X, np.ones(4)])
    coef = np.linalg.lstsq(A, XOR_Y, rcond=None)[0]
    affine_mse = float(np.mean((A @ coef - XOR_Y) ** 2))
    ctx.check("no hidden layer: the least-squares affine fit of XOR has MSE 1/4 (it predicts "
              "1/2 at every point)", 0.25, affine_mse, atol=1e-12)
    ctx.check("the trained networks beat every affine model by ≥ 10× in MSE (max over seed-0 "
              "runs of final MSE / 0.25)", 0.1,
              worst(r["hist"].train_loss[-1] for r in main.values()) / affine_mse, cmp="<=")
    solved = {h: sum(runs[(h, s)]["acc"] == 1.0 for s in seeds) for h in NETS}
    ctx.metric("seeds_solved", {h: f"{v}/{len(seeds)}" for h, v in solved.items()})

    ctx.text(
        "XOR is the chapter's example: four points, the output 1 where exactly one input is "
        "1. No line separates the classes, so a network needs a hidden layer. The chapter's "
        f"network is 2-{HIDDEN}-1 with sigmoids throughout and the mean squared error; beside "
        "it the same network with a tanh hidden layer (zero-centred, with a derivative of 1 at "
        "0 against the sigmoid's 1/4, so it trains faster). Both are trained by full-batch "
        "gradient descent with `cm.train(model, cm.losses.mse, cm.optim.sgd(α), X, y, "
        "batch_size=4)` (one step per epoch), from Xavier-normal weights and zero biases: "
        f"sigmoid α = {NETS['sigmoid'][1]}, {NETS['sigmoid'][2]} epochs; tanh α = "
        f"{NETS['tanh'][1]}, {NETS['tanh'][2]} epochs. Seed 0 of each reaches 100 % accuracy "
        f"at epoch {main['sigmoid']['first_100']} (sigmoid) and {main['tanh']['first_100']} "
        f"(tanh); of the {len(seeds)} seed{'s' if len(seeds) > 1 else ''} tried, "
        f"{solved['sigmoid']} (sigmoid) and {solved['tanh']} (tanh) reach it. The early "
        "plateau at MSE ≈ 0.25 is the constant output 1/2, which is also the best any affine "
        "model achieves (the least-squares fit of XOR is the constant 1/2, MSE exactly 1/4): "
        "the network sits there until its hidden units break the symmetry of the four "
        "points.")

    fig, ax = viz.new_figure(size=(7.6, 4.4))
    for c, hidden in enumerate(NETS):
        for seed in seeds:
            r = runs[(hidden, seed)]
            ep = np.arange(1, len(r["hist"].train_loss) + 1)
            ax.plot(ep, r["hist"].train_loss, color=viz.COLORS[c], lw=2.0 if seed == 0 else 0.8,
                    alpha=1.0 if seed == 0 else 0.5,
                    label=f"{hidden} hidden, α = {r['lr']}" + (" (seed 0)" if seed == 0 else "")
                    if seed in (0, 1) else None)
        f100 = main[hidden]["first_100"]
        if f100 is not None:
            ax.plot([f100], [main[hidden]["hist"].train_loss[f100 - 1]], "o", ms=7, mfc="none",
                    color=viz.COLORS[c])
    ax.axhline(0.25, color="0.5", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("epoch (= gradient step, full batch)")
    ax.set_ylabel("MSE on the 4 points")
    ax.set_title("XOR, 2-4-1 network: training loss (circle: first epoch at 100 % accuracy; "
                 "dotted: constant output 1/2)", fontsize=9.5)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ctx.figure(fig, "loss", "Training loss of the XOR network, bold seed 0 and thin further "
                            "seeds. After a plateau near 0.25 (the network outputs ≈ 1/2 "
                            "everywhere) the hidden units specialise and the loss falls fast.")

    fig, axes = viz.new_figure(1, 2, size=(10.5, 4.6))
    g = np.linspace(-0.5, 1.5, 161)
    GX, GY = np.meshgrid(g, g)
    grid = np.column_stack([GX.ravel(), GY.ravel()])
    for ax, hidden in zip(axes, NETS, strict=True):
        model = main[hidden]["model"]
        P = predict(model, grid).reshape(GX.shape)
        cf = ax.contourf(GX, GY, P, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.75)
        ax.contour(GX, GY, P, levels=[0.5], colors="k", linewidths=2.0)
        W = np.asarray(model[0].weight.data)
        b = np.asarray(model[0].bias.data)
        for j in range(HIDDEN):  # the hidden unit's line w·x + b = 0
            if abs(W[j, 1]) > 1e-12:
                ax.plot(g, -(W[j, 0] * g + b[j]) / W[j, 1], "--", color="0.25", lw=0.9)
            else:
                ax.axvline(-b[j] / W[j, 0], ls="--", color="0.25", lw=0.9)
        for cls, mk in ((0, "o"), (1, "s")):
            pts = XOR_X[XOR_Y[:, 0] == cls]
            ax.plot(pts[:, 0], pts[:, 1], mk, ms=11, mec="k", mfc="white" if cls == 0 else "k",
                    label=f"class {cls}")
        ax.set_xlim(-0.5, 1.5)
        ax.set_ylim(-0.5, 1.5)
        ax.set_aspect("equal")
        ax.set_xlabel("x₁")
        ax.set_ylabel("x₂")
        ax.set_title(f"{hidden} hidden layer: output (colour), boundary 0.5 (black),\n"
                     "hidden units' lines wᵢ·x + bᵢ = 0 (dashed)", fontsize=9)
        ax.legend(fontsize=8, loc="upper right")
    fig.colorbar(cf, ax=axes, shrink=0.85, label="network output")
    ctx.figure(fig, "boundary",
               "Decision boundaries of the trained networks (seed 0). The output is a smooth "
               "function of the inputs; its 0.5 level set bends around the two class-1 points. "
               "Each hidden unit contributes one line w·x + b = 0 where its activation is at "
               "its midpoint (some lie outside the square). The sigmoid network carves a band "
               "around (0, 1) and (1, 0) with two nearly parallel units; the tanh network "
               "found a saddle-shaped solution instead: XOR has more than one.")
    return runs


def _recursion(ctx, runs):
    ctx.status("δ recursion vs reverse mode")
    loss = cm.losses.mse
    rows, diffs, fdiffs = [], [], []
    for hidden in NETS:
        r = runs[(hidden, 0)]
        model = r["model"]
        snapshots = {"initial": r["init"], "trained": model.state_dict()}
        for when, state in snapshots.items():
            model.load_state_dict(state)
            tape, functional = autodiff_grads(model, XOR_X, XOR_Y, loss)
            rec, res = recursion_grads(model, XOR_X, lambda a: loss.derivative(XOR_Y, a))
            diffs.append(max_diff(rec, tape))
            fdiffs.append(max_diff(rec, functional))
            if when == "trained" or hidden == "sigmoid":
                for k, (name, lin) in enumerate((("layer 1", "0"), ("layer 2", "2"))):
                    gw = rec[f"{lin}.weight"]
                    rows.append([f"{hidden}, {when}", name, str(res.deltas[k].shape),
                                 float(np.linalg.norm(res.deltas[k])),
                                 float(np.linalg.norm(gw)),
                                 float(np.max(np.abs(gw - tape[f"{lin}.weight"]))),
                                 float(np.max(np.abs(rec[f"{lin}.bias"] - tape[f"{lin}.bias"])))])
        model.load_state_dict(snapshots["trained"])

    # a deeper, wider network on random data: the recursion for L = 4 layers, mixed activations
    rng = np.random.default_rng(7)
    deep = nn.Sequential(nn.Linear(5, 16, rng=1), nn.Tanh(), nn.Linear(16, 16, rng=2), nn.ReLU(),
                         nn.Linear(16, 8, rng=3), nn.Sigmoid(), nn.Linear(8, 3, rng=4))
    Xd, Yd = rng.standard_normal((32, 5)), rng.standard_normal((32, 3))
    tape_d, func_d = autodiff_grads(deep, Xd, Yd, loss)
    rec_d, res_d = recursion_grads(deep, Xd, lambda a: loss.derivative(Yd, a))
    deep_diff = max(max_diff(rec_d, tape_d), max_diff(rec_d, func_d))
    in_grad = cm.grad(lambda x: loss(Yd, deep(x)))(Xd)
    in_diff = float(np.max(np.abs(res_d.input_grad - np.asarray(in_grad))))

    ctx.text(
        "The chapter's backward pass, written out. `cm.nn.backprop(weights, biases, X, "
        "loss_grad, activation)` runs the forward pass z_l = W_l a_{l−1} + b_l, a_l = σ(z_l) "
        "and then the recursion δ_L = ∂L/∂a_L ⊙ σ'(z_L), δ_l = (W_{l+1}ᵀ δ_{l+1}) ⊙ σ'(z_l), "
        "∂L/∂W_l = δ_l a_{l−1}ᵀ in plain NumPy, with the weights read out of the trained "
        "`Sequential` by `cm.nn.mlp_from_sequential` and ∂L/∂a_L = "
        "`cm.losses.mse.derivative(y, a)` (it holds the 1/n of the mean). Its gradients are "
        "set against the engine's reverse mode twice: `loss.backward()` on the module's "
        "Tensors, and `cm.grad` of the module as a pure function of its parameters "
        "(`cm.nn.functional_call`). They agree to the last bits, at the initial and at the "
        f"trained parameters: max |difference| {max(diffs):.1e} (backward) and "
        f"{max(fdiffs):.1e} (cm.grad). The same holds for a 5-16-16-8-3 network with tanh, "
        f"ReLU, sigmoid and identity layers on 32 random examples ({deep_diff:.1e}), including "
        f"one more step of the recursion to the input, ∂L/∂x = δ_1 W_1 ({in_diff:.1e}).")
    ctx.table(["network, parameters", "layer", "δ shape (n, units)", "‖δ_l‖",
               "‖∂L/∂W_l‖ (recursion)", "max |∂L/∂W_l: recursion − backward|",
               "max |∂L/∂b_l: recursion − backward|"], rows,
              caption="The δ recursion layer by layer on the XOR networks (δ as rows, one per "
                      "example: the batch form δ_l = (δ_{l+1} W_{l+1}) ⊙ σ'(z_l))")
    ctx.check("XOR networks (sigmoid, tanh; initial and trained): δ recursion = loss.backward() "
              "(max abs. diff.)", 0.0, worst(diffs), atol=1e-12)
    ctx.check("XOR networks: δ recursion = cm.grad(functional_call) (max abs. diff.)", 0.0,
              worst(fdiffs), atol=1e-12)
    ctx.check("4-layer tanh/ReLU/sigmoid network, 32 examples: δ recursion = reverse mode "
              "(max abs. diff.)", 0.0, deep_diff, atol=1e-12)
    ctx.check("∂L/∂x = δ_1 W_1 = cm.grad w.r.t. the input (max abs. diff.)", 0.0, in_diff,
              atol=1e-12)
    ctx.metric("recursion_vs_backward_max_abs_diff", worst(diffs))
    ctx.metric("recursion_vs_cm_grad_max_abs_diff", worst(fdiffs))
    ctx.metric("deep_network_max_abs_diff", deep_diff)


def _caveats(ctx):
    ctx.status("softmax and batch sums")
    rng = np.random.default_rng(3)
    n, k = 12, 3
    centres = np.array([[0.0, 2.0], [-1.8, -1.0], [1.8, -1.0]])
    labels = np.arange(n) % k
    X = centres[labels] + 0.8 * rng.standard_normal((n, 2))
    Y = np.eye(k)[labels]
    model = nn.Sequential(nn.Linear(2, 5, rng=11), nn.Tanh(), nn.Linear(5, k, rng=12),
                          nn.Softmax())
    loss = cm.losses.categorical_cross_entropy
    tape, _ = autodiff_grads(model, X, Y, loss)
    mlp = nn.mlp_from_sequential(model)
    acts = mlp["activation"]  # ["tanh", "softmax"]
    _, a_s = nn.forward_pass(mlp["weights"], mlp["biases"], X, activation=acts)
    s = a_s[-1]
    g = loss.derivative(Y, s)  # ∂L/∂a_L = −y/(n s)
    hidden_then_id = acts[:-1] + ["identity"]  # δ_L given directly as ∂L/∂z_L

    full, _ = recursion_grads(model, X, g, activation=acts)  # s ⊙ (g − ⟨g, s⟩)
    naive, _ = recursion_grads(model, X, g * s * (1 - s), activation=hidden_then_id)
    shortcut, _ = recursion_grads(model, X, (s - Y) / n, activation=hidden_then_id)
    res = nn.backprop(mlp["weights"], mlp["biases"], X, g, activation=acts)
    b_true = tape["2.bias"]
    b_sum = res.deltas[-1].sum(axis=0)
    b_one = res.deltas[-1][0]
    b_mean = res.deltas[-1].mean(axis=0)
    w_sum = sum(np.outer(res.deltas[-1][i], res.activations[-2][i]) for i in range(n))

    def rel(a, b):
        return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b))

    r_naive = rel_err(naive, tape)
    r_full = rel_err(full, tape)
    r_short = rel_err(shortcut, tape)
    r_sum, r_one, r_mean = rel(b_sum, b_true), rel(b_one, b_true), rel(b_mean, b_true)
    r_w = rel(w_sum, tape["2.weight"])
    ratio = float(np.linalg.norm(b_true) / np.linalg.norm(b_mean))
    rows = [
        ["softmax output: δ_L = ∂L/∂a_L ⊙ s(1 − s) (the chapter's form, diagonal σ')",
         "all weights and biases", r_naive],
        ["softmax output: δ_L = s ⊙ (∂L/∂a_L − ⟨∂L/∂a_L, s⟩) (full Jacobian; "
         "`output_activation=\"softmax\"`)", "all weights and biases", r_full],
        ["softmax + cross-entropy: δ_L = (s − y)/n", "all weights and biases", r_short],
        ["∂L/∂b_L = δ_L of one example (the chapter's formula, read for a batch)",
         "b_2", r_one],
        ["∂L/∂b_L = mean over the batch of δ_L (the 1/n counted twice)", "b_2", r_mean],
        ["∂L/∂b_L = Σ_n δ_L⁽ⁿ⁾ (sum over the batch)", "b_2", r_sum],
        ["∂L/∂W_L = Σ_n δ_L⁽ⁿ⁾ a_{L−1}⁽ⁿ⁾ᵀ = δ_Lᵀ A_{L−1}", "W_2", r_w],
    ]
    ctx.text(
        "Two places where the chapter's formulas need care, measured on a 2-5-3 network "
        f"(tanh, softmax output, cross-entropy) and a batch of {n} points in 3 classes, against "
        "`loss.backward()`. First, δ_L = ∂L/∂a_L ⊙ σ'(z_L) assumes an element-wise output "
        "activation, whose Jacobian ∂a_L/∂z_L is diagonal. Softmax couples the outputs: "
        "∂s_i/∂z_j = s_i(δ_ij − s_j), so δ_L = s ⊙ (∂L/∂a_L − ⟨∂L/∂a_L, s⟩), which with "
        "cross-entropy collapses to (s − y)/n. Keeping only the diagonal s_i(1 − s_i) gives a "
        f"gradient off by {100 * r_naive:.0f} % (relative norm). Second, ∂L/∂b_l = δ_l is the "
        "gradient for one example; for a batch it is the sum Σ_n δ_l⁽ⁿ⁾ (and ∂L/∂W_l = "
        "Σ_n δ_l⁽ⁿ⁾ a_{l−1}⁽ⁿ⁾ᵀ), the mean of the loss already sitting in ∂L/∂a_L. Taking "
        "one example's δ, or averaging the δ's again, is wrong; the average is off by "
        f"exactly the batch size (ratio {ratio:.6g}).")
    ctx.table(["δ_L / bias gradient computed as", "compared", "‖· − autodiff‖ / ‖autodiff‖"],
              rows, caption="The chapter's caveats, measured against reverse mode")
    ctx.check("softmax output: the diagonal δ_L = g ⊙ s(1 − s) is wrong (relative error "
              "> 10 %)", 0.1, r_naive, cmp=">")
    ctx.check("softmax output: full-Jacobian δ_L = s ⊙ (g − ⟨g, s⟩) = autodiff (relative "
              "error)", 0.0, r_full, atol=1e-12)
    ctx.check("softmax + cross-entropy: δ_L = (s − y)/n = autodiff (relative error)", 0.0,
              r_short, atol=1e-12)
    ctx.check("batch: ∂L/∂b_L = Σ_n δ_L⁽ⁿ⁾ = autodiff (relative error)", 0.0, r_sum,
              atol=1e-12)
    ctx.check("batch: ∂L/∂W_L = Σ_n δ_L⁽ⁿ⁾ a_{L−1}⁽ⁿ⁾ᵀ = autodiff (relative error)", 0.0, r_w,
              atol=1e-12)
    ctx.check("batch: one example's δ_L as ∂L/∂b_L is wrong (relative error > 10 %)", 0.1,
              r_one, cmp=">")
    ctx.check("batch: the mean of δ_L is ∂L/∂b_L / n (ratio = batch size)", float(n), ratio,
              rtol=1e-12)
    ctx.metric("softmax_diagonal_delta_relative_error", r_naive)
    ctx.metric("bias_grad_one_example_relative_error", r_one)
