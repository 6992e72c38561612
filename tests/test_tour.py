"""Tests of the tour (calcml/tour): every section in quick mode, and the runner's machinery."""

import json
import math
import os

import numpy as np
import pytest

from calcml import cli
from calcml.tour import SECTIONS, SectionContext, get_sections, json_safe, run_tour, section

PNG = b"\x89PNG\r\n\x1a\n"
SECTION_NAMES = [s.name for s in get_sections()]


def _strict_json(path):
    def bad(const):
        raise ValueError(f"non-standard JSON constant {const}")

    with open(path, encoding="utf-8") as fh:
        return json.load(fh, parse_constant=bad)


def _assert_schema(data, names):
    assert set(data) == {"sections"}
    assert set(data["sections"]) == set(names)
    for sec in data["sections"].values():
        assert set(sec) == {"metrics", "checks"}
        assert isinstance(sec["metrics"], dict)
        assert sec["checks"], "a section must check something"
        for c in sec["checks"]:
            assert set(c) == {"name", "expected", "measured", "ok"}
            assert isinstance(c["name"], str) and isinstance(c["ok"], bool)


@pytest.fixture(scope="module", params=SECTION_NAMES)
def quick_run(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"tour-{request.param}")
    rc = cli.main(["tour", "--quick", "--no-progress", "--out", str(out),
                   "--section", request.param])
    return request.param, out, rc


def test_section_quick_run_passes(quick_run, capsys):
    name, out, rc = quick_run
    data = _strict_json(out / "metrics.json")
    failed = [c for c in data["sections"][name]["checks"] if not c["ok"]]
    assert rc == 0, f"failed checks: {failed}"
    _assert_schema(data, [name])
    assert not failed


def test_section_writes_figures_and_html(quick_run):
    name, out, _ = quick_run
    pngs = sorted(p for p in os.listdir(out) if p.endswith(".png"))
    assert pngs and all(p.startswith(f"{name}-") for p in pngs)
    for p in pngs:
        with open(out / p, "rb") as fh:
            assert fh.read(8) == PNG
        assert (out / p).stat().st_size > 5000
    html = (out / "index.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert SECTIONS[name].title.split(":")[0] in html
    for p in pngs:
        assert f'src="{p}"' in html
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert "FAIL" not in html


def test_section_metrics_are_recorded(quick_run):
    name, out, _ = quick_run
    data = _strict_json(out / "metrics.json")
    metrics = data["sections"][name]["metrics"]
    assert metrics["runtime_s"] > 0
    assert len(data["sections"][name]["checks"]) >= 5


# --- the machinery -----------------------------------------------------------------------------

@pytest.fixture
def temp_sections():
    """Register throw-away sections and remove them afterwards."""
    added = []

    def add(name, func, chapter="0.1"):
        section(name, title=f"Test {name}", chapter=chapter, description="a test section")(func)
        added.append(name)

    yield add
    for n in added:
        SECTIONS.pop(n, None)


def test_failing_check_gives_nonzero_exit(temp_sections, tmp_path, capsys):
    def bad(ctx):
        ctx.check("one plus one", 2, 1 + 1, cmp="==")
        ctx.check("a wrong prediction", 1.0, 1.5, atol=0.1)
        ctx.metric("value", float("nan"))

    temp_sections("zz-failing", bad)
    rc = cli.main(["tour", "--no-progress", "--section", "zz-failing", "--out", str(tmp_path)])
    assert rc == 1
    out = capsys.readouterr().out
    assert "a wrong prediction" in out and "FAIL" in out
    data = _strict_json(tmp_path / "metrics.json")
    _assert_schema(data, ["zz-failing"])
    checks = data["sections"]["zz-failing"]["checks"]
    assert [c["ok"] for c in checks] == [True, False]
    assert checks[1] == {"name": "a wrong prediction", "expected": 1.0, "measured": 1.5,
                         "ok": False}
    assert data["sections"]["zz-failing"]["metrics"]["value"] == "nan"
    assert "FAIL" in (tmp_path / "index.html").read_text(encoding="utf-8")


def test_raising_section_is_reported_and_others_still_run(temp_sections, tmp_path):
    def boom(ctx):
        ctx.text("about to fail")
        raise RuntimeError("kaboom")

    def fine(ctx):
        ctx.check("fine", 0.0, 0.0, atol=0.0)

    temp_sections("zz-boom", boom, chapter="0.1")
    temp_sections("zz-fine", fine, chapter="0.2")
    result = run_tour(tmp_path, ["zz-fine", "zz-boom"], progress=False)
    assert [r.section.name for r in result.sections] == ["zz-boom", "zz-fine"]  # chapter order
    assert not result.ok
    boom_r, fine_r = result.sections
    assert "kaboom" in boom_r.error and not boom_r.ok
    assert fine_r.ok
    data = _strict_json(tmp_path / "metrics.json")
    assert data["sections"]["zz-boom"]["checks"][-1]["ok"] is False
    assert "kaboom" in (tmp_path / "index.html").read_text(encoding="utf-8")


def test_registry_rejects_bad_names_and_duplicates(temp_sections):
    with pytest.raises(ValueError):
        section("Bad Name", title="t", chapter="1", description="d")
    with pytest.raises(ValueError, match="twice"):
        section("autodiff", title="t", chapter="9.6", description="d")(lambda ctx: None)


def test_check_helper(tmp_path):
    sec = get_sections(["autodiff"])[0]
    ctx = SectionContext(sec, tmp_path)
    assert ctx.check("close abs", 1.0, 1.0 + 1e-13, atol=1e-12)
    assert not ctx.check("not close", 1.0, 1.1, atol=1e-3)
    assert ctx.check("close rel", 1e6, 1e6 + 0.5, rtol=1e-6)
    assert ctx.check("arrays", [1.0, 2.0], np.array([1.0, 2.0 + 1e-15]), atol=1e-14)
    assert not ctx.check("arrays, one off", [1.0, 2.0], [1.0, 2.1], atol=1e-3)
    assert not ctx.check("nan never passes", 0.0, float("nan"), atol=1.0)
    assert ctx.check("between", (-1, 1), 0.3, cmp="between")
    assert not ctx.check("outside", (-1, 1), 1.3, cmp="between")
    assert ctx.check("<=", 1.0, 0.5, cmp="<=") and not ctx.check(">", 1.0, 0.5, cmp=">")
    assert ctx.check("==", "monotone", "monotone", cmp="==")
    assert not ctx.check("== lists", [1, 2], [1, 3], cmp="==")
    assert not ctx.check("shape mismatch", [1, 2], [1, 2, 3], atol=1.0)
    with pytest.raises(ValueError):
        ctx.check("bad comparison", 1, 1, cmp="~")
    assert [c.ok for c in ctx.checks].count(True) == 6
    assert ctx.size(10, 2) == 10 and SectionContext(sec, tmp_path, quick=True).size(10, 2) == 2


def test_json_safe():
    v = json_safe({"a": np.float32(1.5), "b": np.array([1.0, np.nan, np.inf, -np.inf]),
                   "c": (np.int64(3), True, None), "d": float("nan"), 4: "x"})
    assert v == {"a": 1.5, "b": [1.0, "nan", "inf", "-inf"], "c": [3, True, None],
                 "d": "nan", "4": "x"}
    json.dumps(v, allow_nan=False)
    assert isinstance(json_safe(np.bool_(True)), bool)
    assert not math.isnan(json_safe(np.float64(2.0)))
