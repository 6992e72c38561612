"""``python -m calcml``: the same command as ``calcml``."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
