"""Tour section ``attention`` (chapter 9.6, attention mechanisms).

The gradient of scaled dot-product attention, in closed form against the engine (and the
chapter's formula, which has no K in it, against a pair of key matrices that give the same
scores but different gradients), then a one-block transformer built from ``cm.nn`` (token and
position embeddings as parameters, multi-head self-attention, residual connections, layer
norm, an MLP, a linear read-out) trained with ``cm.optim.adam`` on two sequence tasks:
reversing and sorting sequences of 8 tokens over a vocabulary of 10.  Measured: token
accuracy on held-out sequences (never drawn for training), the learned attention maps (an
anti-diagonal for reversal; content-based for sorting) and an ablation showing that the
attention is what carries the information between positions.
"""

from __future__ import annotations

import math

import numpy as np

import calcml as cm
from calcml import viz
from calcml.tour import section
from calcml.tour.context import worst

nn = cm.nn

VOCAB, LENGTH = 10, 8
EMBED, HEADS, HIDDEN = 32, 2, 64
BATCH, LR = 64, 3e-3
EVAL_EVERY = 10

TASKS = {
    "reverse": lambda X: X[:, ::-1].copy(),
    "sort": lambda X: np.sort(X, axis=1),
}


# --- the model ------------------------------------------------------------------------------

class Block(nn.Module):
    """A (post-norm) transformer block: x ← LN(x + MHA(x)), then x ← LN(x + MLP(x)).

    Both sub-layers sit on residual connections; the MLP's is a ``cm.nn.Residual``, the
    attention's is written out because the attention weights are returned as well."""

    def __init__(self, rng):
        super().__init__()
        self.attn = nn.MultiHeadAttention(EMBED, HEADS, rng=rng)
        self.norm1 = nn.LayerNorm(EMBED)
        self.mlp = nn.Residual(nn.Sequential(nn.Linear(EMBED, HIDDEN, rng=rng), nn.ReLU(),
                                             nn.Linear(HIDDEN, EMBED, rng=rng)))
        self.norm2 = nn.LayerNorm(EMBED)

    def forward(self, x):
        a, weights = self.attn(x, need_weights=True)
        x = self.norm1(x + a)
        return self.norm2(self.mlp(x)), weights


class TinyTransformer(nn.Module):
    """Embeddings (token + learned position) → one :class:`Block` → a linear read-out per
    position: (batch, LENGTH) integer tokens to (batch, LENGTH, VOCAB) logits."""

    def __init__(self, seed):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.token_embedding = cm.tensor(0.5 * rng.standard_normal((VOCAB, EMBED)),
                                         requires_grad=True)
        self.position_embedding = cm.tensor(0.5 * rng.standard_normal((LENGTH, EMBED)),
                                            requires_grad=True)
        self.block = Block(rng)
        self.readout = nn.Linear(EMBED, VOCAB, rng=rng)

    def forward(self, tokens, need_weights=False):
        x = self.token_embedding[tokens] + self.position_embedding
        x, weights = self.block(x)
        logits = self.readout(x)
        return (logits, weights) if need_weights else logits


# --- data -----------------------------------------------------------------------------------

_PLACE = VOCAB ** np.arange(LENGTH, dtype=np.int64)


def held_out_set(n, seed):
    """``n`` distinct random sequences (the test set) and their codes (base-VOCAB numbers)."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, VOCAB, (2 * n, LENGTH))
    _, first = np.unique(X @ _PLACE, return_index=True)
    X = X[np.sort(first)[:n]]
    return X, X @ _PLACE


def draw_batch(rng, held_codes):
    """A training batch of random sequences, none of them in the held-out set."""
    X = rng.integers(0, VOCAB, (BATCH, LENGTH))
    while True:
        bad = np.isin(X @ _PLACE, held_codes)
        if not bad.any():
            return X
        X[bad] = rng.integers(0, VOCAB, (int(bad.sum()), LENGTH))


def predict(model, X, params=None):
    """Logits and attention weights (batch, heads, L, L) without recording, as arrays."""
    with cm.no_grad():
        if params is None:
            logits, w = model(X, need_weights=True)
        else:
            logits, w = nn.functional_call(model, params, X, need_weights=True)
    return np.asarray(getattr(logits, "data", logits)), np.asarray(getattr(w, "data", w))


def train(task, steps, seed, X_test, codes_test, n_monitor=400):
    """Adam (cosine-decayed learning rate) on fresh batches; returns the model, the loss per
    step, and the held-out token accuracy every ``EVAL_EVERY`` steps (on a monitor subset)."""
    model = TinyTransformer(seed)
    opt = cm.optim.Optimizer(model.parameters(),
                             cm.optim.adam(cm.optim.cosine_decay(LR, steps, alpha=0.05)))
    rng = np.random.default_rng(seed + 1000)
    f = TASKS[task]
    X_mon, Y_mon = X_test[:n_monitor], f(X_test[:n_monitor])
    losses, acc_steps, accs = [], [], []
    for k in range(steps):
        X = draw_batch(rng, codes_test)
        logits = model(X)
        loss = cm.losses.cross_entropy(f(X).reshape(-1), cm.reshape(logits, (-1, VOCAB)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.data))
        if (k + 1) % EVAL_EVERY == 0 or k == 0:
            acc_steps.append(k + 1)
            accs.append(float(np.mean(np.argmax(predict(model, X_mon)[0], -1) == Y_mon)))
    return model, np.array(losses), np.array(acc_steps), np.array(accs)


# --- the section ----------------------------------------------------------------------------

@section("attention", title="Attention: its gradient, and a transformer block that learns",
         chapter="9.6",
         description="The gradient of softmax(QKᵀ/√d)V in closed form against the engine (the "
                     "chapter's formula leaves out K); a one-block transformer learns to "
                     "reverse and to sort sequences, with its attention maps.")
def run(ctx):
    """Chapter 9.6, attention."""
    _gradient(ctx)
    n_test = ctx.size(2000, 1000)
    X_test, codes = held_out_set(n_test, seed=7)
    rev = _reverse(ctx, X_test, codes)
    srt = _sort(ctx, X_test, codes)
    _figures(ctx, rev, srt)


def _attention_loss(G):
    def f(Q, K, V):
        return cm.sum(G * nn.scaled_dot_product_attention(Q, K, V))
    return f


def _closed_form(Q, K, V, G):
    """∂L/∂Q, ∂L/∂K, ∂L/∂V of L = Σ G ⊙ softmax(QKᵀ/√d)V, and ∂L/∂S."""
    d = Q.shape[-1]
    S = Q @ K.T / math.sqrt(d)
    P = np.exp(S - S.max(axis=-1, keepdims=True))
    P /= P.sum(axis=-1, keepdims=True)
    dP = G @ V.T
    dS = P * (dP - np.sum(dP * P, axis=-1, keepdims=True))
    return dS @ K / math.sqrt(d), dS.T @ Q / math.sqrt(d), P.T @ G, dS


def _gradient(ctx):
    ctx.status("the attention gradient")
    rng = np.random.default_rng(3)
    Lq, Lk, d = 3, 6, 5
    Q, K, V = (rng.standard_normal(s) for s in ((Lq, d), (Lk, d), (Lk, d)))
    G = rng.standard_normal((Lq, d))  # ∂L/∂output: L = Σ G ⊙ Attention(Q, K, V)
    f = _attention_loss(G)
    gQ, gK, gV = cm.grad(f, argnums=(0, 1, 2))(Q, K, V)
    cQ, cK, cV, dS = _closed_form(Q, K, V, G)
    chapter = dS @ V / math.sqrt(d)  # the chapter's (1/√d_k) softmax'(S) V, read as a rule
    # A second key matrix with the same scores: K' = K + N, the rows of N orthogonal to
    # every query (Lq < d leaves room), so QK'ᵀ = QKᵀ: same weights, same output.
    _, _, vt = np.linalg.svd(Q)
    N = rng.standard_normal((Lk, d - Lq)) @ vt[Lq:]
    K2 = K + N
    gQ2 = cm.grad(f, argnums=0)(Q, K2, V)
    out1 = nn.scaled_dot_product_attention(Q, K, V)
    out2 = nn.scaled_dot_product_attention(Q, K2, V)
    cQ2 = dS @ K2 / math.sqrt(d)

    def mad(a, b):
        return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))

    def rel(a, b):
        return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b))

    rows = [
        ["∂L/∂V", "Pᵀ G", mad(cV, gV), rel(cV, gV)],
        ["∂L/∂Q", "(∂L/∂S) K / √d", mad(cQ, gQ), rel(cQ, gQ)],
        ["∂L/∂K", "(∂L/∂S)ᵀ Q / √d", mad(cK, gK), rel(cK, gK)],
        ["∂L/∂Q, the chapter", "(1/√d) softmax'(S) V = (∂L/∂S) V / √d", mad(chapter, gQ),
         rel(chapter, gQ)],
        ["∂L/∂Q with K' = K + N (QNᵀ = 0)", "(∂L/∂S) K' / √d", mad(cQ2, gQ2), rel(cQ2, gQ2)],
        ["∂L/∂Q with K' minus with K", "(∂L/∂S) N / √d", mad(gQ2 - gQ, dS @ N / math.sqrt(d)),
         rel(gQ2 - gQ, dS @ N / math.sqrt(d))],
    ]
    ctx.text(
        "The chapter writes the gradient of attention as ∂Attention/∂Q = (1/√d_k) "
        "softmax'(QKᵀ/√d_k) V. With S = QKᵀ/√d, P = softmax(S) row by row, O = PV and G = "
        "∂L/∂O, the chain rule gives ∂L/∂V = PᵀG, ∂L/∂P = GVᵀ, ∂L/∂S = P ⊙ (∂L/∂P − "
        "rowsum(∂L/∂P ⊙ P)) (the softmax Jacobian), and then ∂L/∂Q = (∂L/∂S) K/√d and "
        "∂L/∂K = (∂L/∂S)ᵀ Q/√d: the derivative of S with respect to Q is K/√d. V enters "
        "∂L/∂Q only through ∂L/∂P; the chapter's formula has V where K belongs (read as a "
        "backward rule it is (∂L/∂S) V/√d, which has the right shape when d_v = d_k). "
        f"Measured on random Q ({Lq}×{d}), K, V ({Lk}×{d}) and G, against `cm.grad` of L = "
        "Σ G ⊙ `cm.nn.scaled_dot_product_attention`(Q, K, V):")
    ctx.text(
        "Whatever reading one chooses, no formula that sees K only through the scores can be "
        "right: with K' = K + N, the rows of N orthogonal to every query (possible since "
        f"{Lq} queries < d = {d}), the scores, weights and output are the same "
        f"(max |O' − O| = {mad(out1, out2):.1e}), but ∂L/∂Q changes by (∂L/∂S) N/√d.")
    ctx.table(["gradient", "closed form", "max |closed form − engine|",
               "‖closed form − engine‖ / ‖engine‖"], rows,
              caption="Gradients of L = Σ G ⊙ softmax(QKᵀ/√d)V, float64")
    ctx.check("∂L/∂V = PᵀG, ∂L/∂Q = (∂L/∂S)K/√d, ∂L/∂K = (∂L/∂S)ᵀQ/√d against the engine "
              "(max abs. diff.)", 0.0, worst(r[2] for r in rows[:3]), atol=1e-12)
    ctx.check("the chapter's (1/√d)softmax'(S)V is not ∂L/∂Q (relative error > 0.1)", 0.1,
              rows[3][3], cmp=">")
    ctx.check("K' = K + N with QNᵀ = 0: same attention output (max abs. diff.)", 0.0,
              mad(out1, out2), atol=1e-12)
    ctx.check("…but the engine's ∂L/∂Q changes (‖∂L/∂Q' − ∂L/∂Q‖ / ‖∂L/∂Q‖ > 0.1)", 0.1,
              rel(gQ2, gQ), cmp=">")
    ctx.check("…by exactly (∂L/∂S) N/√d (max abs. diff.)", 0.0, rows[5][2], atol=1e-12)
    ctx.metric("gradient_max_abs_diff", {r[0]: r[2] for r in rows})
    ctx.metric("chapter_formula_rel_error", rows[3][3])
    ctx.metric("same_scores_dQ_rel_change", rel(gQ2, gQ))


def _accuracy(model, X, Y, params=None):
    return float(np.mean(np.argmax(predict(model, X, params)[0], -1) == Y))


def _reverse(ctx, X_test, codes):
    ctx.status("training: reverse")
    steps = ctx.size(400, 150)
    model, losses, acc_steps, accs = train("reverse", steps, 11, X_test, codes)
    Y = TASKS["reverse"](X_test)
    logits, w = predict(model, X_test)
    pred = np.argmax(logits, -1)
    acc = float(np.mean(pred == Y))
    seq_acc = float(np.mean(np.all(pred == Y, axis=1)))
    target = LENGTH - 1 - np.arange(LENGTH)
    per_head = [float(np.mean(np.argmax(w[:, h], -1) == target)) for h in range(HEADS)]
    mean_map = w.mean(axis=(0, 1))  # averaged over sequences and heads
    head_mean_argmax = float(np.mean(np.argmax(w.mean(axis=1), -1) == target))
    anti_mass = float(np.mean(w.mean(axis=1)[:, np.arange(LENGTH), target]))
    zero = {"block.attn.out_proj.weight": np.zeros((EMBED, EMBED)),
            "block.attn.out_proj.bias": np.zeros(EMBED)}
    ablated = _accuracy(model, X_test, Y, zero)
    n_tok = Y.size
    ctx.text(
        f"The model: token embeddings ({VOCAB}×{EMBED}) and position embeddings "
        f"({LENGTH}×{EMBED}) as parameters, one block of {HEADS}-head self-attention "
        f"(`cm.nn.MultiHeadAttention`) with a residual connection and layer norm, an MLP "
        f"({EMBED}→{HIDDEN}→{EMBED}, ReLU) on a `cm.nn.Residual` with layer norm, and a "
        f"linear read-out to {VOCAB} logits per position: "
        f"{model.num_parameters()} parameters, float64. Trained by Adam (α = {LR:g}, cosine "
        f"decay) on the mean cross-entropy over positions, {steps} steps of {BATCH} fresh "
        f"random sequences each; the {len(X_test)} test sequences are never drawn for "
        "training.")
    ctx.text(
        f"Reversal (y_i = x_{{L−1−i}}, L = {LENGTH}): every output position must fetch the "
        "token of one other position, a purely positional routing that attention can "
        f"express in one layer. Held-out token accuracy after {steps} steps: {acc:.2%} "
        f"({seq_acc:.2%} of the sequences entirely right). The learned attention is the "
        f"anti-diagonal: the largest weight of query i lies on key L−1−i for {per_head[0]:.1%} "
        f"and {per_head[1]:.1%} of the (sequence, position) pairs in the two heads, and the "
        f"mean weight there is {anti_mass:.2f} (uniform attention would give "
        f"{1 / LENGTH:.3f}). Ablation: with the attention's output projection set to zero "
        "(`cm.nn.functional_call`), each position sees only its own token and position, which "
        "carry no information about the token it must output (position i ≠ L−1−i for even "
        f"L): accuracy falls to {ablated:.1%}, chance being 1/{VOCAB}.")
    ctx.check("reverse: held-out token accuracy ≥ 99 %", 0.99, acc, cmp=">=")
    ctx.check("reverse: argmax of the head-averaged attention of query i is key L−1−i for "
              "≥ 90 % of the positions", 0.9, head_mean_argmax, cmp=">=")
    ctx.check("reverse: ablating the attention output gives chance accuracy 1/V (± 3 %)",
              (1 / VOCAB - 0.03, 1 / VOCAB + 0.03), ablated, cmp="between")
    ctx.check("reverse: the training loss falls below 0.05 (from ≈ ln V = "
              f"{math.log(VOCAB):.2f})", 0.05, float(np.mean(losses[-10:])), cmp="<")
    ctx.metric("reverse_steps", steps)
    ctx.metric("reverse_test_token_accuracy", acc)
    ctx.metric("reverse_test_sequence_accuracy", seq_acc)
    ctx.metric("reverse_antidiagonal_argmax_per_head", per_head)
    ctx.metric("reverse_antidiagonal_argmax_head_mean", head_mean_argmax)
    ctx.metric("reverse_antidiagonal_mean_weight", anti_mass)
    ctx.metric("reverse_ablated_accuracy", ablated)
    ctx.metric("reverse_final_loss", float(np.mean(losses[-10:])))
    ctx.metric("test_tokens", n_tok)
    return dict(losses=losses, acc_steps=acc_steps, accs=accs, w=w, mean_map=mean_map,
                steps=steps, acc=acc)


def _sort(ctx, X_test, codes):
    ctx.status("training: sort")
    steps = ctx.size(700, 300)
    model, losses, acc_steps, accs = train("sort", steps, 12, X_test, codes)
    Y = TASKS["sort"](X_test)
    logits, w = predict(model, X_test)
    acc = float(np.mean(np.argmax(logits, -1) == Y))
    # attention-weighted mean token value of the keys, per head and query position
    attended = np.einsum("nhij,nj->nhi", w, X_test.astype(float)).mean(axis=0)
    expected = Y.mean(axis=0)  # the mean i-th smallest token: what position i outputs
    increasing = [bool(np.all(np.diff(attended[h]) > 0)) for h in range(HEADS)]
    corr = [float(np.corrcoef(attended[h], expected)[0, 1]) for h in range(HEADS)]
    positional = float(np.max(np.abs(w.mean(axis=(0, 1)) - 1 / LENGTH)))
    ctx.text(
        f"Sorting (y = the tokens in increasing order) is the other kind of task: output i is "
        f"the i-th smallest token, wherever it stands, so the routing depends on content, not "
        f"on position. The same architecture, {steps} steps: held-out token accuracy "
        f"{acc:.2%}. Averaged over sequences the attention map is flat (largest deviation "
        f"from 1/{LENGTH}: {positional:.3f}) — there is no positional pattern; per sequence it "
        "is content-based: early output positions attend to small tokens, late ones to large "
        "tokens. The attention-weighted mean key token, per query position, is "
        + ", ".join(f"head {h + 1}: " + " < ".join(f"{v:.1f}" for v in attended[h])
                    if increasing[h] else
                    f"head {h + 1}: " + ", ".join(f"{v:.1f}" for v in attended[h])
                    for h in range(HEADS))
        + " (correlation with the mean sorted token at that position: "
        + ", ".join(f"{c:.3f}" for c in corr) + ").")
    ctx.check("sort: held-out token accuracy ≥ 99 %", 0.99, acc, cmp=">=")
    ctx.check("sort: number of heads whose attention-weighted mean key token increases "
              "strictly with the query position (content-based routing)", 1, sum(increasing),
              cmp=">=")
    ctx.check("sort: the sequence-averaged attention map is close to uniform (no positional "
              "routing; max |mean weight − 1/L| < 0.05)", 0.05, positional, cmp="<")
    ctx.metric("sort_steps", steps)
    ctx.metric("sort_test_token_accuracy", acc)
    ctx.metric("sort_attended_mean_token", attended.tolist())
    ctx.metric("sort_attended_correlation", corr)
    ctx.metric("sort_mean_map_max_deviation", positional)
    return dict(losses=losses, acc_steps=acc_steps, accs=accs, w=w, steps=steps, acc=acc,
                attended=attended, expected=expected, X=X_test)


def _figures(ctx, rev, srt):
    ctx.status("figures")
    fig, axes = viz.new_figure(1, 2, size=(11, 3.8))
    for i, (name, r) in enumerate((("reverse", rev), ("sort", srt))):
        k = np.arange(1, len(r["losses"]) + 1)
        axes[0].plot(k, r["losses"], color=viz.COLORS[i], lw=0.8, alpha=0.35)
        win = 10
        smooth = np.convolve(r["losses"], np.ones(win) / win, mode="valid")
        axes[0].plot(k[win - 1:], smooth, color=viz.COLORS[i], lw=1.6, label=name)
        axes[1].plot(r["acc_steps"], r["accs"], "-o", ms=2.5, color=viz.COLORS[i], label=name)
    axes[0].axhline(math.log(VOCAB), color="0.5", ls=":", lw=1, label="ln V (chance)")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("cross-entropy (training batch)")
    axes[0].set_title("training loss (thin: per step; thick: mean of 10)", fontsize=10)
    axes[0].grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[1].axhline(0.99, color="0.4", ls="--", lw=1, label="99 %")
    axes[1].axhline(1 / VOCAB, color="0.5", ls=":", lw=1, label="chance 1/V")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("token accuracy (held-out)")
    axes[1].set_title("held-out token accuracy", fontsize=10)
    axes[1].set_ylim(0, 1.02)
    axes[1].grid(True, alpha=0.3)
    axes[1].legend(fontsize=8, loc="center right")
    ctx.figure(fig, "training",
               "Training the one-block transformer: cross-entropy per step and token accuracy "
               "on held-out sequences (every 10 steps, on 400 of them). Reversal is learned in "
               "a few dozen steps; sorting takes longer.")

    fig, axes = viz.new_figure(1, 4, size=(17, 4.2))
    ticks = np.arange(LENGTH)
    for h in range(HEADS):
        ax = axes[h]
        im = ax.imshow(rev["w"][:, h].mean(axis=0), cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"reverse, head {h + 1}: mean over test set", fontsize=10)
        ax.set_xlabel("key position j")
        ax.set_ylabel("query position i")
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04)
    # sorting: one test sequence, the head whose attended token grows best with position
    best = int(np.argmax([np.corrcoef(srt["attended"][h], srt["expected"])[0, 1]
                          for h in range(HEADS)]))
    x = srt["X"][0]
    ax = axes[2]
    im = ax.imshow(srt["w"][0, best], cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(ticks, [str(t) for t in x])
    ax.set_yticks(ticks, [f"{i}→{t}" for i, t in enumerate(np.sort(x))])
    ax.set_xlabel("key token (in input order)")
    ax.set_ylabel("query position → output token")
    ax.set_title(f"sort, head {best + 1}: one sequence", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax = axes[3]
    for h in range(HEADS):
        ax.plot(ticks, srt["attended"][h], "-o", ms=4, color=viz.COLORS[h],
                label=f"head {h + 1}: Σ_j w_ij x_j")
    ax.plot(ticks, srt["expected"], "--", color="0.35", lw=1.2, label="mean i-th smallest token")
    ax.axhline((VOCAB - 1) / 2, color="0.6", ls=":", lw=1, label="uniform attention")
    ax.set_xlabel("query position i")
    ax.set_ylabel("attention-weighted key token")
    ax.set_title("sort: what each position attends to (test mean)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    ctx.figure(fig, "maps",
               "Left two: the attention weights of the reversal model, averaged over the "
               "held-out sequences, one panel per head: the anti-diagonal j = L−1−i. Third: "
               "the sorting model's weights on one held-out sequence (columns: the input "
               "tokens in order; rows: the output position and the token it must produce). "
               "Right: the attention-weighted mean key token per query position: the "
               "sorting model looks at small tokens for the first outputs and at large ones "
               "for the last.")
