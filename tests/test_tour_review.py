"""Review of the tour's checks: a check must be able to fail, in particular on NaN or on an
empty measurement (tests of the fixes in calcml/tour)."""

import math

import numpy as np
import pytest

from calcml.tour import SectionContext, get_sections, least, worst
from calcml.tour.sections import losses as losses_section
from calcml.tour.sections.q_learning import contraction_ratio

NAN = float("nan")


@pytest.fixture
def ctx(tmp_path):
    return SectionContext(get_sections(["losses"])[0], tmp_path, quick=True)


# --- NaN must not vanish in the max/min that a check compares --------------------------------

def test_python_max_hides_nan_but_worst_does_not():
    errors = [0.0, NAN, 1e-16]
    assert not math.isnan(max(errors))  # the built-in max drops the NaN: not used in checks
    assert math.isnan(worst(errors))
    assert math.isnan(worst(0.0, NAN))
    assert math.isnan(worst(x for x in errors))
    assert math.isnan(worst({"a": 0.0, "b": NAN}.values()))
    assert math.isnan(least([1.0, NAN]))
    assert math.isnan(worst([])) and math.isnan(least([]))
    assert worst([0.5, 2.0, 1.0]) == 2.0 and worst(3, 1) == 3.0
    assert least([0.5, 2.0, 1.0]) == 0.5


def test_check_of_worst_error_fails_on_nan(ctx):
    assert not ctx.check("max abs. diff.", 0.0, worst([0.0, NAN]), atol=1e-12)
    assert not ctx.check("max ratio ≤ γ", 0.9, worst([0.5, NAN]), cmp="<=")
    assert not ctx.check("min gain > 0", 0.0, least([0.1, NAN]), cmp=">")
    assert ctx.check("max abs. diff.", 0.0, worst([0.0, 1e-13]), atol=1e-12)


# --- an empty measurement is not a pass ------------------------------------------------------

@pytest.mark.parametrize("kw", [dict(atol=1.0), dict(cmp="=="), dict(cmp="<="), dict(cmp=">")])
def test_empty_measurement_fails(ctx, kw):
    assert not ctx.check("every entry", 1.0, np.array([]), **kw)
    assert "nothing was measured" in ctx.checks[-1].rule


def test_empty_measurement_fails_between(ctx):
    assert not ctx.check("every entry in range", (0.0, 1.0), [], cmp="between")


# --- q-learning: the contraction check must see non-finite residuals ------------------------

def test_contraction_ratio():
    assert contraction_ratio([1.0, 0.5, 0.25, 0.125]) == pytest.approx(0.5)
    assert contraction_ratio([1.0, 0.5, 0.0, 0.0]) == pytest.approx(0.5)  # 0/0 is not a ratio
    assert math.isnan(contraction_ratio([1.0, 0.5, math.inf]))  # diverged: used to be dropped
    assert math.isnan(contraction_ratio([1.0, 0.5, NAN]))
    assert math.isnan(contraction_ratio([1.0]))


def test_contraction_check_fails_on_diverging_residuals(ctx):
    assert not ctx.check("the backup contracts", 0.95,
                         contraction_ratio([1.0, 0.5, 0.4, math.inf, NAN]), cmp="<=")
    assert ctx.check("the backup contracts", 0.95, contraction_ratio([1.0, 0.9, 0.81]),
                     cmp="<=")


# --- losses: NaN finite differences must fail the chapter's-derivative checks ---------------

def test_losses_chapter_checks_fail_on_nan_differences(ctx, monkeypatch):
    def nan_differences(fun, x, h=1e-6):
        return np.full(np.shape(x), NAN)

    monkeypatch.setattr(losses_section, "central_differences", nan_differences)
    losses_section._chapter(ctx)
    ratio_checks = [c for c in ctx.checks if "central difference" in c.name]
    assert len(ratio_checks) == 10
    assert not any(c.ok for c in ratio_checks)


def test_losses_chapter_checks_pass_unpatched(ctx):
    losses_section._chapter(ctx)
    ratio_checks = [c for c in ctx.checks if "central difference" in c.name]
    assert len(ratio_checks) == 10 and all(c.ok for c in ratio_checks)
