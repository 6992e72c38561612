"""Tests of the ``calcml`` command (calcml/cli.py, calcml/__main__.py)."""

import subprocess
import sys

import calcml
from calcml import cli
from calcml.tour import get_sections


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"calcml {calcml.__version__}"


def test_tour_list_names_every_section(capsys):
    assert cli.main(["tour", "--list"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    names = [s.name for s in get_sections()]
    assert {"autodiff", "gradient-descent"} <= set(names)
    assert len(lines) == len(names)
    for line, sec in zip(lines, get_sections(), strict=True):
        assert line.split()[0] == sec.name
        assert f"§{sec.chapter}" in line
        assert sec.description[:30] in line


def test_unknown_section_is_a_clear_usage_error(capsys, tmp_path):
    rc = cli.main(["tour", "--section", "no-such-section", "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no-such-section" in err
    assert "available" in err and "autodiff" in err and "gradient-descent" in err
    assert not (tmp_path / "o").exists()  # nothing was run


def test_usage_errors_return_status_2(capsys):
    assert cli.main([]) == 2  # no command: help on stderr
    assert "tour" in capsys.readouterr().err
    assert cli.main(["tour", "--bogus"]) == 2
    assert cli.main(["frobnicate"]) == 2


def test_help_exits_zero(capsys):
    assert cli.main(["tour", "--help"]) == 0
    out = capsys.readouterr().out
    for opt in ("--out", "--section", "--quick", "--list"):
        assert opt in out


def test_python_dash_m_calcml():
    run = subprocess.run([sys.executable, "-m", "calcml", "--version"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0
    assert run.stdout.strip() == f"calcml {calcml.__version__}"
    run = subprocess.run([sys.executable, "-m", "calcml", "tour", "--list"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0
    assert "autodiff" in run.stdout and "gradient-descent" in run.stdout
    run = subprocess.run([sys.executable, "-m", "calcml", "tour", "--section", "nope"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "nope" in run.stderr


def test_console_script_is_declared():
    from importlib.metadata import entry_points

    eps = [ep for ep in entry_points(group="console_scripts") if ep.name == "calcml"]
    assert eps and eps[0].value == "calcml.cli:main"


def test_an_unwritable_output_folder_is_a_usage_error(tmp_path, capsys):
    from calcml.cli import main

    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    for out in (blocker, blocker / "sub"):
        assert main(["tour", "--out", str(out), "--section", "autodiff", "--quick",
                     "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "calcml tour: error: cannot write the report to" in err and str(out) in err
    assert blocker.read_text() == "not a folder"
