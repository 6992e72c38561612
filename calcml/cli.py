"""The ``calcml`` command (also ``python -m calcml``).

::

    calcml --version
    calcml tour [--out DIR] [--section NAME ...] [--quick] [--list] [--no-progress]

``calcml tour`` runs the chapter's sections as experiments and writes ``DIR/index.html``, the
PNG figures and ``DIR/metrics.json``; it exits with status 1 if any check of theory against
measurement fails, and 2 on a usage error (an unknown section name, a bad option, an output
folder that cannot be written).  Every section fixes its own seeds, so a run is reproducible.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from . import __version__

__all__ = ["main", "build_parser"]

_TOUR_HELP = """Run the chapter "Calculus in Machine Learning" as experiments: each section
draws its figures and checks theory against measurement.  Writes DIR/index.html, PNG figures
and DIR/metrics.json; exits non-zero if any check fails."""


def build_parser():
    """The argument parser of the ``calcml`` command."""
    parser = argparse.ArgumentParser(
        prog="calcml",
        description="calcml: the calculus behind machine learning, as software.",
    )
    parser.add_argument("--version", action="version", version=f"calcml {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    tour = sub.add_parser("tour", help="run the chapter's sections as experiments",
                          description=_TOUR_HELP)
    tour.add_argument("--out", metavar="DIR", default=None,
                      help="output folder (default: calcml-tour)")
    tour.add_argument("--section", "-s", dest="sections", metavar="NAME", nargs="+",
                      action="extend", default=None,
                      help="run only these sections (repeatable; default: all)")
    tour.add_argument("--quick", action="store_true",
                      help="smaller sizes and fewer iterations (seconds, for tests)")
    tour.add_argument("--list", action="store_true",
                      help="list the sections with a one-line description and exit")
    tour.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _list_sections(out):
    from .tour import get_sections

    secs = get_sections()
    width = max((len(s.name) for s in secs), default=0)
    for s in secs:
        print(f"{s.name:<{width}}  §{s.chapter:<5} {s.description}", file=out)
    return 0


def _tour(args, out, err):
    from .tour import DEFAULT_OUT, UnknownSectionError, get_sections, run_tour

    if args.list:
        return _list_sections(out)
    try:
        get_sections(args.sections)
    except UnknownSectionError as exc:
        print(f"calcml tour: error: {exc} (see calcml tour --list)", file=err)
        return 2
    out_dir = args.out or DEFAULT_OUT
    try:  # refuse an unwritable folder now, not after minutes of work
        os.makedirs(out_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        print(f"calcml tour: error: cannot write the report to {out_dir!r}: {exc}", file=err)
        return 2
    result = run_tour(out_dir, args.sections, quick=args.quick,
                      progress=not args.no_progress)
    for r in result.sections:
        n_ok = sum(c.ok for c in r.checks)
        mark = "ok  " if r.ok else "FAIL"
        print(f"{mark} {r.section.name:<20} {n_ok:>3}/{len(r.checks):<3} checks  "
              f"{r.runtime_s:7.2f} s", file=out)
        if r.error:
            print("     the section raised:\n" + r.error, file=out)
        for c in r.checks:
            if not c.ok:
                print(f"     failed: {c.name}: expected {c.expected!r}, measured "
                      f"{c.measured!r} ({c.rule})", file=out)
    n = sum(len(r.checks) for r in result.sections)
    failed = len(result.failed_checks)
    print(f"{n - failed}/{n} checks passed in {result.runtime_s:.1f} s; report: "
          f"{result.index_html}", file=out)
    return 0 if result.ok else 1


def main(argv=None):
    """Run the ``calcml`` command with ``argv`` (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 on success, 1 if a tour check failed, 2 on a usage error.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse's own status
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return _tour(args, sys.stdout, sys.stderr)
