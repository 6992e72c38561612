"""Shared test setup.

The helpers next to the tests (``fdcheck``: central differences) import by name whatever
pytest's import mode, so the folder is put on ``sys.path`` here.
"""

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

# CI runs the property tests on a fixed sequence of examples (a red CI must be reproducible);
# locally Hypothesis explores freely.  No example database is written in either case.
import os  # noqa: E402

from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("dev", database=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
