"""The engine: trace levels, the primitive registry, reverse and forward mode, pytrees."""
