"""The registry of tour sections.

A section is a function ``run(ctx)`` that performs one experiment of the chapter and reports
through its :class:`~calcml.tour.context.SectionContext` (text, figures, metrics, checks).  It
is registered with the :func:`section` decorator in a module of ``calcml/tour/sections/``;
every module there is imported by :func:`load_sections`, so adding a section is adding one
module.

Example
-------
A complete section module, ``calcml/tour/sections/example.py``::

    import calcml as cm
    from calcml.tour import section

    @section("example", title="A derivative", chapter="9.6",
             description="d/dx sin at 0 is 1.")
    def run(ctx):
        ctx.text("The derivative of sin at 0 is cos(0) = 1.")
        ctx.check("d sin/dx at 0", 1.0, float(cm.grad(cm.sin)(0.0)), atol=1e-15)
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Section", "SECTIONS", "section", "load_sections", "get_sections",
           "UnknownSectionError"]

#: Every registered section, by name, in registration order.
SECTIONS: dict[str, Section] = {}

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


class UnknownSectionError(KeyError):
    """A section name that no section module registers."""

    def __str__(self):
        return str(self.args[0])


@dataclass(frozen=True)
class Section:
    """A registered tour section.

    Attributes
    ----------
    name : str
        The command-line name (lower case, dashes): ``calcml tour --section NAME``.
    title : str
        The heading of the section in ``index.html``.
    chapter : str
        The chapter section it illustrates, e.g. ``"9.1"``; sections run in this order.
    description : str
        One line, shown by ``calcml tour --list``.
    func : callable
        ``func(ctx)``, given a :class:`~calcml.tour.context.SectionContext`.
    """

    name: str
    title: str
    chapter: str
    description: str
    func: Callable
    rank: int = 0

    @property
    def order(self):
        """Sort key: the chapter number as a tuple of integers, then ``rank`` (the reading
        order of sections on one chapter section), then the name."""
        nums = tuple(int(p) for p in re.findall(r"\d+", self.chapter))
        return nums, self.rank, self.name


def section(name, *, title, chapter, description, rank=0):
    """Register the decorated function ``func(ctx)`` as the tour section ``name``.

    Parameters
    ----------
    name : str
        Lower case letters, digits and dashes.
    title, chapter, description : str
        See :class:`Section`.
    rank : int, optional
        Orders the sections of one chapter section (lower first; then by name).

    Returns
    -------
    callable
        The decorator; it returns the function unchanged.
    """
    if not _NAME.match(name):
        raise ValueError(f"calcml.tour: section name {name!r} must be lower case letters, "
                         "digits and dashes")

    def register(func):
        old = SECTIONS.get(name)
        if old is not None and old.func.__module__ != func.__module__:
            raise ValueError(f"calcml.tour: section {name!r} is registered twice "
                             f"({old.func.__module__} and {func.__module__})")
        SECTIONS[name] = Section(name, title, chapter, " ".join(description.split()), func,
                                 rank)
        return func

    return register


def load_sections():
    """Import every module of ``calcml.tour.sections`` (each registers its sections)."""
    from . import sections as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{info.name}")
    return SECTIONS


def get_sections(names=None):
    """The sections to run, in chapter order.

    Parameters
    ----------
    names : sequence of str, optional
        Section names; all sections when omitted.  Duplicates are run once.

    Raises
    ------
    UnknownSectionError
        If a name is not registered; the message lists the available names.
    """
    load_sections()
    if not names:
        chosen = list(SECTIONS.values())
    else:
        unknown = [n for n in names if n not in SECTIONS]
        if unknown:
            raise UnknownSectionError(
                f"unknown section{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(repr(n) for n in unknown)}; available: "
                f"{', '.join(s.name for s in sorted(SECTIONS.values(), key=lambda s: s.order))}")
        chosen = [SECTIONS[n] for n in dict.fromkeys(names)]
    return sorted(chosen, key=lambda s: s.order)
