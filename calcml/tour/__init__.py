"""The tour: the chapter "Calculus in Machine Learning" run as experiments.

``calcml tour`` runs every registered section; each performs an experiment of the chapter,
draws its figures and checks the theory against the measurement.  The report goes to
``index.html``, the PNG figures and ``metrics.json`` in the output folder.

Adding a section is adding one module to ``calcml/tour/sections/`` that defines a function
decorated with :func:`section` (see :mod:`calcml.tour.registry` for an example).
"""

from .context import Check, SectionContext, best_time, json_safe, least, worst
from .registry import SECTIONS, Section, UnknownSectionError, get_sections, load_sections, section
from .runner import DEFAULT_OUT, SectionResult, TourResult, run_tour

__all__ = ["section", "Section", "SECTIONS", "get_sections", "load_sections",
           "UnknownSectionError", "SectionContext", "Check", "best_time", "json_safe",
           "worst", "least",
           "run_tour", "TourResult", "SectionResult", "DEFAULT_OUT"]
