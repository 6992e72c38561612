"""README.md stays true.

* Every ```python block of the README is executed, each in a fresh namespace, all of them in one
  subprocess (so that a block's side effects, such as registering a primitive, stay out of the
  test process) whose working directory is a temporary folder.  The lines ``# -> text`` of a
  block are the output it must print, line by line, in order.  A block whose first line is
  ``# needs: cupy`` runs only where CuPy sees a GPU.
* The "Quick start" holds exactly two commands: one installs calcml and runs ``calcml tour``,
  the other installs the test extras and runs the tests; ``.ci/run`` runs that test command,
  verbatim.
* What the README says about the repository holds: the files it names exist, the tour sections
  it names exist, and the ``calcml tour --list`` output it shows is the real one.
"""

from __future__ import annotations

import difflib
import io
import json
import os
import re
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"

TOUR_COMMAND = "python3 -m pip install . && calcml tour --out calcml-tour"
TEST_COMMAND = 'python3 -m pip install ".[test]" && python3 -m pytest -q -p no:cacheprovider'

_FENCE = re.compile(r"^```([A-Za-z0-9_+-]*)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
_EXPECT = "# ->"
_NEEDS_CUPY = "# needs: cupy"


def _text():
    return README.read_text(encoding="utf-8")


def _blocks(text):
    """``(language, code, heading)`` of every fenced block, in order."""
    out = []
    for m in _FENCE.finditer(text):
        before = text[: m.start()]
        headings = re.findall(r"^#{1,6} +(.+?) *$", before, re.M)
        out.append((m.group(1).lower(), m.group(2), headings[-1] if headings else ""))
    return out


def _section(text, title):
    """The body of the ``## title`` section, up to the next heading of level 2."""
    m = re.search(rf"^## +{re.escape(title)} *$", text, re.M)
    assert m, f"README.md has no '## {title}' section"
    rest = text[m.end():]
    nxt = re.search(r"^## ", rest, re.M)
    return rest[: nxt.start()] if nxt else rest


def expected_output(code):
    """The lines a block must print: each ``# -> text`` comment gives one line, in order."""
    lines = []
    for line in code.splitlines():
        s = line.strip()
        if s.startswith(_EXPECT):
            rest = s[len(_EXPECT):]
            lines.append(rest[1:] if rest.startswith(" ") else rest)
    return lines


def _python_blocks():
    return [(code, heading) for lang, code, heading in _blocks(_text()) if lang == "python"]


def _slug(heading, i):
    s = re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")
    return f"{i}-{s[:40]}"


# --- running the blocks ------------------------------------------------------------------------

def _run_blocks(blocks, cupy_ok):
    """Run each block in a fresh namespace; runs inside the subprocess (see ``_DRIVER``)."""
    import traceback

    results = []
    for i, code in enumerate(blocks):
        if code.lstrip().startswith(_NEEDS_CUPY) and not cupy_ok:
            results.append({"skipped": True, "stdout": "", "error": None})
            continue
        buf = io.StringIO()
        error = None
        try:
            with redirect_stdout(buf):
                exec(compile(code, f"<README.md python block {i}>", "exec"),
                     {"__name__": f"readme_block_{i}"})
        except BaseException:  # noqa: BLE001 - reported to the test, which fails on it
            error = traceback.format_exc()
        results.append({"skipped": False, "stdout": buf.getvalue(), "error": error})
    return results


_DRIVER = """
import json, sys
sys.path.insert(0, sys.argv[3])
import test_readme
import calcml.backend
blocks = json.load(open(sys.argv[1], encoding="utf-8"))
res = test_readme._run_blocks(blocks, calcml.backend.cupy_available())
json.dump(res, open(sys.argv[2], "w", encoding="utf-8"))
"""


@pytest.fixture(scope="module")
def block_results(tmp_path_factory):
    work = tmp_path_factory.mktemp("readme")
    blocks = [code for code, _ in _python_blocks()]
    src, dst = work / "blocks.json", work / "results.json"
    src.write_text(json.dumps(blocks), encoding="utf-8")
    env = dict(os.environ, MPLBACKEND="Agg")
    # The calcml of this checkout, whatever is installed.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER, str(src), str(dst), str(Path(__file__).parent)],
        cwd=work, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"the README driver failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(dst.read_text(encoding="utf-8"))


_PY = _python_blocks()


def test_readme_has_an_example_of_each_api():
    code = "\n".join(c for c, _ in _PY)
    for api in ["cm.grad(", "cm.value_and_grad(", "argnums=", "has_aux=True", "cm.vjp(",
                "cm.jvp(", "batched=True", "cm.jacobian(", 'mode="fwd"', "cm.hessian(",
                "cm.hvp(", "cm.check_grad(", "cm.GradientCheckError", "cm.symbolic.grad(",
                "cm.symbolic.hessian(", "cm.tensor(", ".backward()", "cm.no_grad()",
                "cm.make_graph(", "defprim(", "register("]:
        assert api in code, f"no README example uses {api}"
    assert len(_PY) >= 8


@pytest.mark.parametrize("i", range(len(_PY)), ids=[_slug(h, i) for i, (_, h) in enumerate(_PY)])
def test_python_block_runs_and_prints_what_it_shows(block_results, i):
    code, heading = _PY[i]
    res = block_results[i]
    if res["skipped"]:
        pytest.skip("needs CuPy and a GPU")
    assert res["error"] is None, f"README block {i} ({heading}) raised:\n{res['error']}"
    want = expected_output(code)
    got = [line.rstrip() for line in res["stdout"].splitlines()]
    want = [line.rstrip() for line in want]
    if got != want:
        diff = "\n".join(difflib.unified_diff(want, got, "README shows", "block prints",
                                              lineterm=""))
        pytest.fail(f"README block {i} ({heading}) prints something else than it shows:\n{diff}")


def test_expected_output_parser():
    code = "print(1)\n# -> 1\nprint('a\\n b')\n# -> a\n# ->  b\nx = 2  # not an output\n"
    assert expected_output(code) == ["1", "a", " b"]
    assert _run_blocks([code], False)[0]["stdout"].splitlines() == ["1", "a", " b"]
    assert _run_blocks(["# needs: cupy\nraise SystemExit"], False)[0]["skipped"]
    assert "ZeroDivisionError" in _run_blocks(["1 / 0"], False)[0]["error"]


# --- the quick start ---------------------------------------------------------------------------

def _commands(section):
    cmds = []
    for lang, code, _ in _blocks(section):
        assert lang in ("bash", "sh", "shell", "console", ""), f"a {lang} block in Quick start"
        for line in code.splitlines():
            s = line.strip()
            if s and not s.startswith("#"):
                cmds.append(s)
    return cmds


def test_quick_start_has_exactly_two_commands():
    cmds = _commands(_section(_text(), "Quick start"))
    assert cmds == [TOUR_COMMAND, TEST_COMMAND], cmds
    assert "calcml-tour/index.html" in _section(_text(), "Quick start")


def test_ci_runs_the_readme_test_command_verbatim():
    test_command = _commands(_section(_text(), "Quick start"))[1]
    run = [line.strip() for line in CI_RUN.read_text(encoding="utf-8").splitlines()]
    executed = [line for line in run if line and not line.startswith("#")]
    assert test_command in executed, (
        f".ci/run does not run the README's test command verbatim:\n  README: {test_command}\n"
        + "\n".join(f"  .ci/run: {line}" for line in executed if "pytest" in line))


# --- what the README says about the repository --------------------------------------------------

def test_paths_named_in_the_readme_exist():
    named = set(re.findall(r"`((?:calcml|tests|benchmarks|\.ci)/[\w./-]*)`", _text()))
    named |= set(re.findall(r"\b(benchmarks/[\w.-]+\.py)\b", _text()))
    assert "calcml/_core/registry.py" in named and "calcml/ops/" in named
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"README.md names files that do not exist: {missing}"


def test_tour_sections_and_list_output_are_real():
    from calcml.cli import main
    from calcml.tour import get_sections

    text = _text()
    names = {s.name for s in get_sections()}
    used = set(re.findall(r"--section ([\w-]+)", text))
    used |= set(re.findall(r"tour's `([\w-]+)` section", text))
    assert used and used <= names, f"README names unknown tour sections: {used - names}"

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["tour", "--list"]) == 0
    shown = text.split("`calcml tour --list` prints:", 1)
    assert len(shown) == 2, "README no longer shows the output of calcml tour --list"
    block = _FENCE.search(shown[1])
    assert block, "no block after 'calcml tour --list prints:'"
    assert block.group(2).rstrip().splitlines() == buf.getvalue().rstrip().splitlines()
