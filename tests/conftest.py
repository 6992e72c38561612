"""Shared test setup.

The helpers next to the tests (``fdcheck``: central differences) import by name whatever
pytest's import mode, so the folder is put on ``sys.path`` here.
"""

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
