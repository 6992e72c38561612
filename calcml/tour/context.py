"""What a tour section reports through: text, figures, tables, metrics and checks.

A :class:`SectionContext` is handed to each section function.  The section writes its
explanation with :meth:`~SectionContext.text`, saves figures with
:meth:`~SectionContext.figure`, records numbers with :meth:`~SectionContext.metric` and
compares theory with measurement with :meth:`~SectionContext.check`.  The runner turns the
recorded blocks into ``index.html`` and the metrics and checks into ``metrics.json``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import numpy as np

__all__ = ["Check", "SectionContext", "json_safe", "best_time", "worst", "least"]

_COMPARISONS = {
    "==": lambda m, e: m == e,
    "<=": lambda m, e: m <= e,
    "<": lambda m, e: m < e,
    ">=": lambda m, e: m >= e,
    ">": lambda m, e: m > e,
}


@dataclass
class Check:
    """One comparison of an expected (theoretical) value with a measured one.

    Attributes
    ----------
    name : str
    expected, measured : object
        Numbers (or short lists, strings, booleans), as given to :meth:`SectionContext.check`.
    ok : bool
    rule : str
        The comparison in words (``|measured − expected| ≤ 1e-12``), shown in ``index.html``.
    """

    name: str
    expected: object
    measured: object
    ok: bool
    rule: str

    def as_json(self):
        """The check as ``metrics.json`` stores it: name, expected, measured, ok."""
        return {"name": self.name, "expected": json_safe(self.expected),
                "measured": json_safe(self.measured), "ok": bool(self.ok)}


def json_safe(v):
    """``v`` as plain JSON data: NumPy scalars and arrays as Python numbers and lists,
    NaN and infinities as the strings ``"nan"``, ``"inf"``, ``"-inf"``."""
    if isinstance(v, dict):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if hasattr(v, "tolist") and hasattr(v, "dtype"):  # numpy (or cupy) scalar or array
        return json_safe(np.asarray(v).tolist())
    if isinstance(v, bool) or v is None or isinstance(v, (int, str)):
        return v
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if isinstance(v, (np.integer, np.floating, np.bool_)):
        return json_safe(v.item())
    return str(v)


def _as_floats(values):
    vals = values[0] if len(values) == 1 else values
    if isinstance(vals, (dict,)):
        vals = list(vals.values())
    elif not hasattr(vals, "dtype") and not isinstance(vals, (list, tuple)):
        vals = list(vals)  # a generator or other iterable
    return np.asarray(vals, dtype=float)


def worst(*values):
    """The largest of ``values`` (one iterable, or several numbers), NaN if any is NaN or if
    there are none.

    Python's ``max`` drops a NaN that is not first (``max([0.0, nan]) == 0.0``), so a check
    of ``max(errors) ≤ tol`` would pass with a NaN error; this one makes it fail."""
    a = _as_floats(values)
    return float(np.max(a)) if a.size else math.nan


def least(*values):
    """The smallest of ``values``, NaN if any is NaN or if there are none (see :func:`worst`)."""
    a = _as_floats(values)
    return float(np.min(a)) if a.size else math.nan


def best_time(fn, repeat=5, number=1):
    """The smallest wall-clock time of ``number`` calls of ``fn()``, over ``repeat`` runs,
    divided by ``number`` (seconds): the usual estimate least disturbed by other load."""
    best = math.inf
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


def _fmt(x):
    if isinstance(x, float) or isinstance(x, np.floating):
        return f"{float(x):.3g}"
    return str(x)


class SectionContext:
    """The reporting interface of one tour section.

    Parameters
    ----------
    section : calcml.tour.Section
    out_dir : str or os.PathLike
        Where figures are written (as ``<section>-<name>.png``).
    quick : bool
        Run a smaller version of the experiment (for tests); see :meth:`size`.
    seed : int
        Seed of :attr:`rng`.
    status : callable, optional
        ``status(text)`` shows progress inside the section (the runner's progress bar).

    Attributes
    ----------
    rng : numpy.random.Generator
    metrics : dict
    checks : list of Check
    blocks : list of tuple
        ``("text", str)``, ``("figure", filename, caption)``, ``("code", caption, str)``,
        ``("table", caption, headers, rows)``, in the order the section made them.
    """

    def __init__(self, section, out_dir, quick=False, seed=0, status=None):
        self.section = section
        self.out_dir = os.fspath(out_dir)
        self.quick = bool(quick)
        self.rng = np.random.default_rng(seed)
        self.metrics = {}
        self.checks = []
        self.blocks = []
        self.figures = []
        self._status = status

    # -- sizes and progress ------------------------------------------------------------------

    def size(self, full, quick):
        """``quick`` in quick mode, else ``full``."""
        return quick if self.quick else full

    def status(self, text):
        """Show ``text`` beside the progress bar (what the section is doing now)."""
        if self._status is not None:
            self._status(text)

    # -- content -----------------------------------------------------------------------------

    def text(self, *paragraphs):
        """Add paragraphs of explanation (plain text; `backticks` become code)."""
        for p in paragraphs:
            self.blocks.append(("text", " ".join(str(p).split())))

    def table(self, headers, rows, caption=""):
        """Add a table (``rows``: sequences of cells; floats are shown to 6 digits)."""
        self.blocks.append(("table", caption, list(headers), [list(r) for r in rows]))

    def code(self, text, caption=""):
        """Add a block of preformatted text (code, DOT source, a printed report)."""
        self.blocks.append(("code", caption, str(text)))

    def figure(self, fig, name, caption=""):
        """Save ``fig`` as ``<out_dir>/<section>-<name>.png`` and show it in the report.

        Returns
        -------
        str
            The path of the PNG.
        """
        from .. import viz

        filename = f"{self.section.name}-{name}.png"
        path = viz.save_figure(fig, os.path.join(self.out_dir, filename))
        self.blocks.append(("figure", filename, caption))
        self.figures.append(filename)
        return path

    def metric(self, name, value):
        """Record a measured number (or short list) under ``name``; returns ``value``."""
        self.metrics[name] = value
        return value

    # -- checks ------------------------------------------------------------------------------

    def check(self, name, expected, measured, *, rtol=0.0, atol=0.0, cmp="close"):
        """Compare ``measured`` with ``expected`` and record the outcome.

        Parameters
        ----------
        name : str
            What is compared, in words.
        expected : number, bool, str, or pair
            The prediction of the theory.  With ``cmp="between"`` a pair ``(low, high)``.
        measured : number, bool, str, or array_like
            The measurement.  Arrays are compared entry by entry (all must pass).
        rtol, atol : float
            Tolerances of ``cmp="close"``: ``|measured − expected| ≤ atol + rtol·|expected|``.
        cmp : {"close", "==", "<=", "<", ">=", ">", "between"}
            The comparison; the inequalities read ``measured <op> expected``, ``"between"``
            is ``low ≤ measured ≤ high``.

        Returns
        -------
        bool
            Whether the check passed.  NaN never passes, nor does an empty measurement.
        """
        try:
            if np.size(measured) == 0:
                raise ValueError("nothing was measured (empty)")
            if cmp == "close":
                m = np.asarray(measured, dtype=float)
                e = np.asarray(expected, dtype=float)
                ok = bool(np.all(np.abs(m - e) <= atol + rtol * np.abs(e)))
                if rtol and atol:
                    rule = f"|measured − expected| ≤ {_fmt(atol)} + {_fmt(rtol)}·|expected|"
                elif rtol:
                    rule = f"|measured − expected| ≤ {_fmt(rtol)}·|expected|"
                else:
                    rule = f"|measured − expected| ≤ {_fmt(atol)}"
            elif cmp == "between":
                lo, hi = expected
                m = np.asarray(measured, dtype=float)
                ok = bool(np.all((lo <= m) & (m <= hi)))
                rule = f"{_fmt(lo)} ≤ measured ≤ {_fmt(hi)}"
            elif cmp in _COMPARISONS:
                r = _COMPARISONS[cmp](np.asarray(measured), np.asarray(expected))
                ok = bool(np.all(r))
                rule = f"measured {cmp} expected"
            else:
                raise ValueError(f"calcml.tour: unknown comparison {cmp!r}")
        except (TypeError, ValueError) as exc:
            if "unknown comparison" in str(exc):
                raise
            ok, rule = False, f"could not compare: {exc}"
        self.checks.append(Check(name, expected, measured, ok, rule))
        return ok

    @property
    def ok(self):
        """Whether every check so far passed."""
        return all(c.ok for c in self.checks)
