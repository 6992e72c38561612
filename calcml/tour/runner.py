"""Run tour sections and write ``index.html``, the PNG figures and ``metrics.json``.

The runner gives each selected section a fresh :class:`~calcml.tour.context.SectionContext`,
runs it under a progress bar, and catches its exceptions (a section that raises counts as a
failed check, and the others still run).  Then it writes:

* ``metrics.json``: ``{"sections": {NAME: {"metrics": {...}, "checks": [{"name",
  "expected", "measured", "ok"}, ...]}}}``, plain JSON (NaN and infinities as strings);
* ``index.html``: one self-contained page (inline style, no scripts) with each section's
  text, figures, tables, metrics and checks;
* the PNG figures, written by the sections themselves as they run.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from .context import Check, SectionContext, json_safe
from .html import render_html
from .registry import get_sections

__all__ = ["SectionResult", "TourResult", "run_tour", "DEFAULT_OUT"]

#: The default output folder of ``calcml tour``.
DEFAULT_OUT = "calcml-tour"


@dataclass
class SectionResult:
    """The outcome of one section: its context (blocks, metrics, checks) and run time."""

    section: object
    context: SectionContext
    runtime_s: float
    error: str | None = None

    @property
    def checks(self):
        return self.context.checks

    @property
    def metrics(self):
        return self.context.metrics

    @property
    def ok(self):
        return self.error is None and self.context.ok


@dataclass
class TourResult:
    """What :func:`run_tour` did: the section results and the files written."""

    out_dir: str
    quick: bool
    sections: list = field(default_factory=list)
    runtime_s: float = 0.0

    @property
    def ok(self):
        """Whether every check of every section passed (and no section raised)."""
        return all(r.ok for r in self.sections)

    @property
    def failed_checks(self):
        """``[(section name, Check)]`` for every failed check."""
        return [(r.section.name, c) for r in self.sections for c in r.checks if not c.ok]

    @property
    def index_html(self):
        return os.path.join(self.out_dir, "index.html")

    @property
    def metrics_json(self):
        return os.path.join(self.out_dir, "metrics.json")

    def as_json(self):
        """The content of ``metrics.json``."""
        return {"sections": {
            r.section.name: {"metrics": json_safe(r.metrics),
                             "checks": [c.as_json() for c in r.checks]}
            for r in self.sections}}


def run_tour(out_dir=DEFAULT_OUT, sections=None, quick=False, progress=True, seed=0):
    """Run tour sections and write their report to ``out_dir``.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Output folder (created if needed).
    sections : sequence of str, optional
        Names of the sections to run; all when omitted.
    quick : bool
        Smaller sizes and fewer iterations (seconds rather than a minute).
    progress : bool
        Show a progress bar (on stderr).
    seed : int
        Seed of each section's random generator.

    Returns
    -------
    TourResult

    Raises
    ------
    calcml.tour.UnknownSectionError
        If a section name is not registered.
    """
    chosen = get_sections(sections)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    result = TourResult(out_dir, bool(quick))
    t_start = time.perf_counter()
    bar = tqdm(chosen, desc="calcml tour", unit="section", disable=not progress,
               dynamic_ncols=True)
    for sec in bar:
        bar.set_postfix_str(sec.name)

        def status(text, _name=sec.name):
            bar.set_postfix_str(f"{_name}: {text}")

        ctx = SectionContext(sec, out_dir, quick=quick, seed=seed, status=status)
        t0 = time.perf_counter()
        error = None
        try:
            sec.func(ctx)
        except Exception:  # a failing section is reported, the others still run
            error = traceback.format_exc()
            ctx.checks.append(Check("section ran to completion", True, False, False,
                                    "no exception"))
        runtime = time.perf_counter() - t0
        ctx.metrics.setdefault("runtime_s", round(runtime, 4))
        result.sections.append(SectionResult(sec, ctx, runtime, error))
    bar.close()
    result.runtime_s = time.perf_counter() - t_start

    with open(result.metrics_json, "w", encoding="utf-8") as fh:
        json.dump(result.as_json(), fh, indent=2, allow_nan=False)
        fh.write("\n")
    with open(result.index_html, "w", encoding="utf-8") as fh:
        fh.write(render_html(result))
    return result
