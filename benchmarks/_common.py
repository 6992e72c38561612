"""What the benchmark scripts share: thread limits and a steady allocator."""

from __future__ import annotations

import os
import sys


def set_threads(n):
    """Limit BLAS (through threadpoolctl) and PyTorch, when installed, to ``n`` threads."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass


def reexec_with_malloc_tuning():
    """Run the script again with glibc told to keep freed memory (the same for every side).

    With glibc's defaults a freed multi-megabyte block is sometimes handed back to the kernel
    and the next step pays a page fault per 4 KiB page: large workloads then swing by 2x or more
    between two runs of the same code.  A high trim threshold and no mmap below 32 MiB measure
    the arithmetic instead.  Scripts offer ``--system-malloc`` to keep the defaults.
    """
    if not sys.platform.startswith("linux") or os.environ.get("_CALCML_BENCH_TUNED") == "1":
        return
    tune = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=2147483647"
    old = os.environ.get("GLIBC_TUNABLES")
    env = dict(os.environ, _CALCML_BENCH_TUNED="1",
               GLIBC_TUNABLES=f"{old}:{tune}" if old else tune)
    os.execve(sys.executable, [sys.executable, *sys.argv], env)
