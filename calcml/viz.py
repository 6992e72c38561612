"""Small matplotlib helpers for the tour's figures (no display needed).

Figures are made as :class:`matplotlib.figure.Figure` objects on the Agg (PNG) canvas, never
through ``pyplot``: nothing here needs a display, opens a window or changes the pyplot backend
of the program that imports it, and figures are freed as soon as they are dropped.

The helpers:

* :func:`new_figure` / :func:`save_figure`: make a figure with a grid of axes, write a PNG;
* :func:`line_plot`: several curves on one axes, optionally on log scales, with markers;
* :func:`reference_line`: a dashed theory curve (a power law, a closed form) beside data;
* :func:`bar_plot`: grouped bars (timings of several methods on several problems);
* :func:`contour_with_trajectory`: level sets of f(x, y) with optimisation paths on top;
* :func:`draw_graph`: a :class:`calcml.graph.Graph` drawn left to right in layers.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["new_figure", "save_figure", "line_plot", "reference_line", "bar_plot",
           "contour_with_trajectory", "draw_graph", "graph_layout", "COLORS"]

#: A colour-blind-safe cycle (Okabe-Ito), used by every helper.
COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
          "#F0E442"]


def new_figure(nrows=1, ncols=1, size=None, **kwargs):
    """A figure on the Agg canvas with an ``nrows × ncols`` grid of axes.

    Parameters
    ----------
    nrows, ncols : int
    size : tuple of float, optional
        ``(width, height)`` in inches; by default 4.8 × 3.6 per axes.
    **kwargs
        Passed to :meth:`matplotlib.figure.Figure.subplots` (``sharex``, ``squeeze``, ...).

    Returns
    -------
    fig : matplotlib.figure.Figure
    axes : matplotlib.axes.Axes or numpy.ndarray of them
    """
    if size is None:
        size = (4.8 * ncols, 3.6 * nrows)
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, **kwargs)
    return fig, axes


def save_figure(fig, path, dpi=110):
    """Write ``fig`` as a PNG at ``path`` (directories are created) and return the path."""
    path = os.fspath(path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def line_plot(ax, x, ys, *, logx=False, logy=False, xlabel=None, ylabel=None, title=None,
              marker="o", markersize=3.5, legend=True, **kwargs):
    """Plot several curves sharing the abscissa ``x`` on ``ax``.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    x : array_like
        The abscissa, shared by every curve (or a dict ``label -> x`` matching ``ys``).
    ys : dict
        ``label -> y`` values; non-positive values are left out on a log axis.
    logx, logy : bool
        Logarithmic axes.
    marker : str or None
        Marker of the data points.
    **kwargs
        Passed to :meth:`matplotlib.axes.Axes.plot`.

    Returns
    -------
    matplotlib.axes.Axes
    """
    for i, (label, y) in enumerate(ys.items()):
        xi = np.asarray(x[label] if isinstance(x, dict) else x, dtype=float)
        y = np.asarray(y, dtype=float)
        keep = np.isfinite(y) & np.isfinite(xi)
        if logy:
            keep &= y > 0
        if logx:
            keep &= xi > 0
        ax.plot(xi[keep], y[keep], marker=marker, markersize=markersize, label=label,
                color=COLORS[i % len(COLORS)], **kwargs)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    _decorate(ax, xlabel, ylabel, title)
    if legend and ys:
        ax.legend(fontsize=8)
    return ax


def reference_line(ax, x, y, label=None, color="0.35", style="--", **kwargs):
    """A thin dashed theory curve (closed form, power law) drawn behind the data."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ax.plot(x, y, style, color=color, lw=1.1, label=label, zorder=1, **kwargs)
    return ax


def bar_plot(ax, groups, values, *, logy=False, ylabel=None, title=None, annotate=True,
             fmt="{:.3g}"):
    """Grouped bars: one group per entry of ``groups``, one bar per series of ``values``.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    groups : sequence of str
        Group names (on the x axis).
    values : dict
        ``series label -> sequence`` with one value per group.
    annotate : bool
        Write each value above its bar with ``fmt``.
    """
    k = max(len(values), 1)
    width = 0.8 / k
    pos = np.arange(len(groups), dtype=float)
    for i, (label, vals) in enumerate(values.items()):
        vals = np.asarray(vals, dtype=float)
        bars = ax.bar(pos + (i - (k - 1) / 2) * width, vals, width, label=label,
                      color=COLORS[i % len(COLORS)])
        if annotate:
            for b, v in zip(bars, vals, strict=True):
                ax.annotate(fmt.format(v), (b.get_x() + b.get_width() / 2, b.get_height()),
                            ha="center", va="bottom", fontsize=7, rotation=90,
                            xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(pos, list(groups))
    if logy:
        ax.set_yscale("log")
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, hi * 8)  # room for the annotations
    else:
        ax.margins(y=0.25)
    _decorate(ax, None, ylabel, title)
    ax.legend(fontsize=8)
    return ax


def contour_with_trajectory(ax, f, xlim, ylim, trajectories=None, *, levels=15, grid=200,
                            title=None, xlabel="x", ylabel="y", logscale=False):
    """Level sets of ``f(x, y)`` with optimisation paths drawn on top.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    f : callable
        ``f(X, Y)`` evaluated on NumPy meshgrids (vectorised).
    xlim, ylim : tuple of float
    trajectories : dict, optional
        ``label -> array of shape (k, 2)``: the iterates, joined by lines, the first one
        marked with a square and the last with a star.
    levels : int or sequence
    logscale : bool
        Space the levels geometrically (for functions spanning decades).
    """
    xs = np.linspace(*xlim, grid)
    ys = np.linspace(*ylim, grid)
    X, Y = np.meshgrid(xs, ys)
    Z = np.asarray(f(X, Y), dtype=float)
    if logscale and np.isscalar(levels):
        pos = Z[Z > 0]
        levels = np.geomspace(pos.min(), pos.max(), int(levels))
    cs = ax.contour(X, Y, Z, levels=levels, colors="0.55", linewidths=0.8)
    ax.clabel(cs, fontsize=6, fmt="%.2g")
    for i, (label, path) in enumerate((trajectories or {}).items()):
        path = np.asarray(path, dtype=float)
        c = COLORS[i % len(COLORS)]
        ax.plot(path[:, 0], path[:, 1], "-o", color=c, ms=3, lw=1.2, label=label)
        ax.plot(path[0, 0], path[0, 1], "s", color=c, ms=6)
        ax.plot(path[-1, 0], path[-1, 1], "*", color=c, ms=10)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal", adjustable="box")
    _decorate(ax, xlabel, ylabel, title)
    if trajectories:
        ax.legend(fontsize=8, loc="upper right")
    return ax


def graph_layout(graph, sweeps=4):
    """Positions ``{node id: (x, y)}`` for drawing ``graph`` left to right.

    Notes
    -----
    A layered (Sugiyama-style) layout: the x coordinate is the node's depth
    (:meth:`calcml.graph.Graph.layers`), and within each layer the nodes are ordered by the
    barycentre of their neighbours in the adjacent layer, sweeping left to right and back a
    few times, which removes most edge crossings on small graphs.
    """
    depth = graph.layers()
    n_layers = max(depth, default=0) + 1
    layers = [[n.id for n in graph.nodes if depth[n.id] == d] for d in range(n_layers)]
    parents = {n.id: graph.parents(n.id) for n in graph.nodes}
    children = {n.id: graph.children(n.id) for n in graph.nodes}

    def rank(layer):
        return {v: i - (len(layer) - 1) / 2 for i, v in enumerate(layer)}

    pos = {}
    for layer in layers:
        pos.update(rank(layer))
    for _ in range(sweeps):
        for order, nbrs in ((range(1, n_layers), parents), (range(n_layers - 2, -1, -1),
                                                            children)):
            for d in order:
                def key(v, nbrs=nbrs):
                    ps = [pos[p] for p in nbrs[v]]
                    return (np.mean(ps) if ps else pos[v], v)
                layers[d].sort(key=key)
                pos.update(rank(layers[d]))
    return {v: (float(depth[v]), -pos[v]) for v in pos}


#: Operations whose arguments play different roles: their edges are labelled 0, 1, ...
_ORDERED_OPS = {"subtract", "divide", "power", "matmul", "einsum", "where", "clip", "maximum",
                "minimum", "getitem", "concatenate", "scatter_add"}

_NODE_STYLE = {
    "input": dict(boxstyle="round,pad=0.45", fc="#d9f0d3", ec="#1b7837"),
    "const": dict(boxstyle="round,pad=0.3", fc="white", ec="0.6", ls=":"),
    "op": dict(boxstyle="round,pad=0.4", fc="#dbe9f6", ec="#2166ac"),
}


def draw_graph(graph, ax=None, *, notes=None, title=None, fontsize=10):
    """Draw a computational graph (from :func:`calcml.make_graph`) left to right.

    Parameters
    ----------
    graph : calcml.graph.Graph
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure is made when omitted.
    notes : dict, optional
        ``node id -> str``: extra text under a node's label (a value, an adjoint).
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on.

    Notes
    -----
    Inputs are green, operations blue, constants dotted and the outputs have a thick orange
    border; edges run from an operation's arguments to the operation, labelled with the
    argument position where the order matters (``subtract``, ``divide``, ``power``, ...).
    """
    pos = graph_layout(graph)
    if ax is None:
        n_layers = max((p[0] for p in pos.values()), default=0) + 1
        height = max((sum(1 for p in pos.values() if p[0] == d) for d in range(int(n_layers))),
                     default=1)
        _, ax = new_figure(size=(1.9 * n_layers + 1.2, 1.3 * height + 1.2))
    notes = notes or {}
    texts = {}
    for n in graph.nodes:
        style = dict(_NODE_STYLE[n.kind])
        if n.id in graph.outputs:
            style.update(ec="#D55E00", lw=2.2)
        label = n.label + (f"\n{notes[n.id]}" if n.id in notes else "")
        x, y = pos[n.id]
        texts[n.id] = ax.text(x, y, label, ha="center", va="center", bbox=style,
                              fontsize=fontsize if n.kind != "const" else fontsize - 1,
                              zorder=3)
    for src, dst, arg in graph.edges:
        (x0, y0), (x1, y1) = pos[src], pos[dst]
        rad = 0.0 if abs(x1 - x0) <= 1 or y0 != y1 else 0.25
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), zorder=2,
                    arrowprops=dict(arrowstyle="-|>", color="0.3", lw=1.0, shrinkA=2,
                                    shrinkB=2, patchA=texts[src].get_bbox_patch(),
                                    patchB=texts[dst].get_bbox_patch(),
                                    connectionstyle=f"arc3,rad={rad}"))
        if graph.nodes[dst].op in _ORDERED_OPS:
            ax.annotate(str(arg), ((x0 + 2 * x1) / 3, (y0 + 2 * y1) / 3), fontsize=7,
                        color="0.45", ha="center", va="bottom", zorder=4)
    xs = [p[0] for p in pos.values()] or [0.0]
    ys = [p[1] for p in pos.values()] or [0.0]
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=fontsize + 1)
    return ax.figure


def _decorate(ax, xlabel, ylabel, title):
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
