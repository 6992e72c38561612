"""Tests of the package surface: what ``import calcml`` loads, and the lazy subpackages."""

from __future__ import annotations

import subprocess
import sys

import calcml as cm

HEAVY = ("sklearn", "sympy", "gymnasium")


def test_import_calcml_loads_no_heavy_library():
    # scikit-learn, SymPy and gymnasium cost seconds to import: only the subpackages that need
    # them load them, on first use.
    code = ("import sys, calcml; heavy = [m for m in %r if m in sys.modules]; "
            "print(','.join(heavy))" % (HEAVY,))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "", f"import calcml loaded {out}"


def test_lazy_subpackages_load_on_attribute_access_and_import():
    for name in cm._LAZY:
        module = getattr(cm, name)
        assert module.__name__ == f"calcml.{name}"
        assert name in dir(cm) and name in cm.__all__
    from calcml import estimators

    assert estimators is cm.estimators and hasattr(estimators, "MLPClassifier")


def test_unknown_attribute_is_an_attribute_error():
    try:
        cm.not_a_module  # noqa: B018
    except AttributeError as e:
        assert "not_a_module" in str(e)
    else:
        raise AssertionError("cm.not_a_module did not raise")
