"""GPU benchmarks: calcml on CuPy arrays against the same hand-written forward/backward run on
CuPy (the floor for an engine on CuPy) and PyTorch CUDA eager (when installed), timed in the
same run.  Needs an NVIDIA GPU and CuPy; prints a table of times and ratios to the CuPy floor,
and optionally writes them as JSON.

The floors are ``bench_engine``'s own NumPy functions called on CuPy arrays: NumPy hands CuPy
arrays on to CuPy (``__array_ufunc__``/``__array_function__``), so the floor and calcml do the
same kernels.  Every timed call ends with a device synchronization, so a time is the whole
step, launches and kernels.

Workloads: the reverse-mode chain of 100 elementwise ops (launch-bound: it measures per-op
overhead), MLP training steps from launch-bound to compute-bound sizes through the Tensor API
and through ``cm.value_and_grad``, a digits-sized ``cm.nn`` model moved with
``Module.to("cupy")``, and the Hessian and Hessian-vector product of sum(tanh(A x)).

Run:  python benchmarks/bench_gpu.py [--dtype float32|float64|both] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from bench_engine import (
    chain_fn,
    chain_numpy,
    init_mlp,
    mlp_ce_calcml_tensor,
    mlp_ce_loss_fn,
    mlp_ce_numpy,
    time_row,
)


def _synced(fn, sync):
    def run():
        fn()
        sync()
    return run


def bench_chain(cp, dtype, torch):
    import calcml as cm

    x = cp.asarray(np.linspace(-1, 1, 16).astype(dtype))
    g_cm = cm.grad(lambda h: chain_fn(cm, h))
    got = g_cm(x)
    assert isinstance(got, cp.ndarray) and got.dtype == dtype
    assert np.allclose(cp.asnumpy(got), cp.asnumpy(chain_numpy(x)), rtol=1e-4)
    xt = cm.tensor(x, requires_grad=True)

    def tensor_step():
        xt.grad = None
        chain_fn(cm, xt).backward()

    row = {"floor": lambda: chain_numpy(x), "calcml": lambda: g_cm(x),
           "calcml (Tensor)": tensor_step}
    if torch is not None:
        tx = torch.tensor(cp.asnumpy(x), device="cuda", requires_grad=True)

        def torch_step():
            tx.grad = None
            chain_fn(torch, tx).backward()

        row["torch"] = torch_step
    return row


def bench_mlp(cp, dtype, torch, sizes, batch):
    import calcml as cm

    rng = np.random.default_rng(1)
    x = cp.asarray(rng.normal(size=(batch, sizes[0])).astype(dtype))
    onehot = cp.asarray(np.eye(sizes[-1], dtype=dtype)[rng.integers(0, sizes[-1], batch)])
    lr = 1e-3

    def dev(params):
        return [(cp.asarray(w), cp.asarray(b)) for w, b in params]

    l_np = float(mlp_ce_numpy(dev(init_mlp(sizes, dtype)), x, onehot, lr))
    p_chk = [(cm.tensor(w, requires_grad=True), cm.tensor(b, requires_grad=True))
             for w, b in dev(init_mlp(sizes, dtype))]
    l_cm = mlp_ce_calcml_tensor(cm, p_chk, x, onehot, lr)
    assert isinstance(l_cm.data, cp.ndarray) and l_cm.dtype == dtype
    assert abs(l_np - float(l_cm)) < 1e-3 * max(1, abs(l_np)), (l_np, float(l_cm))
    p_np = dev(init_mlp(sizes, dtype))
    p_cm = [(cm.tensor(w, requires_grad=True), cm.tensor(b, requires_grad=True))
            for w, b in dev(init_mlp(sizes, dtype))]
    p_fn = [list(p) for p in dev(init_mlp(sizes, dtype))]
    vg = cm.value_and_grad(mlp_ce_loss_fn(cm))

    def functional_step():
        _, grads = vg(p_fn, x, onehot)
        for p, g in zip(p_fn, grads):
            p[0] -= lr * g[0]
            p[1] -= lr * g[1]

    row = {"floor": lambda: mlp_ce_numpy(p_np, x, onehot, lr),
           "calcml": lambda: mlp_ce_calcml_tensor(cm, p_cm, x, onehot, lr),
           "calcml (grad)": functional_step}
    if torch is not None:
        tp = [(torch.tensor(w, device="cuda", requires_grad=True),
               torch.tensor(b, device="cuda", requires_grad=True))
              for w, b in init_mlp(sizes, dtype)]
        tx = torch.tensor(cp.asnumpy(x), device="cuda")
        toh = torch.tensor(cp.asnumpy(onehot), device="cuda")

        def torch_step():
            h = tx
            for i, (w, b) in enumerate(tp):
                h = h @ w.T + b
                if i < len(tp) - 1:
                    h = torch.tanh(h)
            loss = -(toh * torch.log_softmax(h, dim=1)).sum() / batch
            loss.backward()
            with torch.no_grad():
                for w, b in tp:
                    w -= lr * w.grad
                    b -= lr * b.grad
                    w.grad = None
                    b.grad = None

        row["torch"] = torch_step
    return row


def bench_nn(cp, dtype, torch, hidden=128, batch=64):
    """One training step of a ``cm.nn`` MLP 64-H-H-10 (ReLU, cross-entropy with integer labels,
    SGD with momentum) moved to the GPU with ``Module.to("cupy")``."""
    import calcml as cm

    sizes = [64, hidden, hidden, 10]
    rng = np.random.default_rng(2)
    x = cp.asarray(rng.normal(size=(batch, 64)).astype(dtype))
    labels = rng.integers(0, 10, batch)
    y = cp.asarray(labels)
    lr, mom = 0.05, 0.9
    layers = []
    for i, (w, b) in enumerate(init_mlp(sizes, dtype)):
        lin = cm.nn.Linear(w.shape[1], w.shape[0], rng=0, dtype=dtype)
        lin.weight.data[...] = w
        lin.bias.data[...] = b
        layers += [lin] + ([cm.nn.ReLU()] if i < len(sizes) - 2 else [])
    model = cm.nn.Sequential(*layers).to("cupy")
    opt = cm.optim.Optimizer(model.parameters(), cm.optim.sgd(lr, momentum=mom))

    def calcml_step():
        opt.zero_grad()
        loss = cm.losses.cross_entropy(y, model(x))
        loss.backward()
        opt.step()

    p_np = [(cp.asarray(w), cp.asarray(b)) for w, b in init_mlp(sizes, dtype)]
    bufs = [(cp.zeros_like(w), cp.zeros_like(b)) for w, b in p_np]
    ar = cp.arange(batch)

    def floor_step():
        acts, h = [x], x
        for i, (w, bias) in enumerate(p_np):
            z = h @ w.T + bias
            h = cp.maximum(z, 0) if i < len(p_np) - 1 else z
            acts.append(h)
        z = acts[-1]
        z = z - z.max(axis=1, keepdims=True)
        e = cp.exp(z)
        g = e / e.sum(axis=1, keepdims=True)
        g[ar, y] -= 1.0
        g /= batch
        for i in reversed(range(len(p_np))):
            w, bias = p_np[i]
            a = acts[i]
            gw, gb = g.T @ a, g.sum(axis=0)
            if i > 0:
                g = (g @ w) * (a > 0)
            vw, vb = bufs[i]
            vw *= mom
            vw += gw
            vb *= mom
            vb += gb
            w -= lr * vw
            bias -= lr * vb

    calcml_step()
    assert isinstance(model[0].weight.data, cp.ndarray)
    row = {"floor": floor_step, "calcml": calcml_step}
    if torch is not None:
        tdt = getattr(torch, np.dtype(dtype).name)
        tl = []
        for i, (w, b) in enumerate(init_mlp(sizes, dtype)):
            lin = torch.nn.Linear(w.shape[1], w.shape[0], dtype=tdt, device="cuda")
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w))
                lin.bias.copy_(torch.from_numpy(b))
            tl += [lin] + ([torch.nn.ReLU()] if i < len(sizes) - 2 else [])
        tm = torch.nn.Sequential(*tl)
        topt = torch.optim.SGD(tm.parameters(), lr=lr, momentum=mom)
        tx = torch.tensor(cp.asnumpy(x), device="cuda")
        ty = torch.tensor(labels, device="cuda")

        def torch_step():
            topt.zero_grad()
            torch.nn.functional.cross_entropy(tm(tx), ty).backward()
            topt.step()

        row["torch"] = torch_step
    return row


def bench_hessian(cp, dtype, torch, n):
    import calcml as cm

    rng = np.random.default_rng(3)
    A = cp.asarray((rng.normal(size=(n, n)) / np.sqrt(n)).astype(dtype))
    x = cp.asarray(rng.normal(size=n).astype(dtype))
    v = cp.asarray(rng.normal(size=n).astype(dtype))

    def f(x):
        return cm.sum(cm.tanh(A @ x))

    def hess_floor():
        t = cp.tanh(A @ x)
        d = -2.0 * t * (1.0 - t * t)
        return A.T @ (d[:, None] * A)

    def hvp_floor():
        t = cp.tanh(A @ x)
        d = -2.0 * t * (1.0 - t * t)
        return A.T @ (d * (A @ v))

    H = cm.hessian(f)
    tol = 1e-3 if dtype == np.float32 else 1e-9
    got = H(x)
    assert isinstance(got, cp.ndarray) and got.dtype == dtype
    assert np.allclose(cp.asnumpy(got), cp.asnumpy(hess_floor()), atol=tol)
    assert np.allclose(cp.asnumpy(cm.hvp(f, (x,), (v,))), cp.asnumpy(hvp_floor()), atol=tol)
    hrow = {"floor": hess_floor, "calcml": lambda: H(x)}
    vrow = {"floor": hvp_floor, "calcml": lambda: cm.hvp(f, (x,), (v,))}
    if torch is not None:
        tA = torch.tensor(cp.asnumpy(A), device="cuda")
        tx = torch.tensor(cp.asnumpy(x), device="cuda")
        tv = torch.tensor(cp.asnumpy(v), device="cuda")
        tf = lambda x: torch.tanh(tA @ x).sum()
        hrow["torch"] = lambda: torch.autograd.functional.hessian(tf, tx)
        vrow["torch"] = lambda: torch.autograd.functional.hvp(tf, tx, tv)
    return hrow, vrow


def run(dtypes):
    import cupy as cp

    import calcml as cm

    if not cm.backend.cupy_available():
        raise SystemExit("bench_gpu: CuPy sees no GPU (calcml.backend.cupy_available() is False)")
    try:
        import torch

        if not torch.cuda.is_available():
            torch = None
    except ImportError:
        torch = None

    def sync():
        cp.cuda.Device().synchronize()
        if torch is not None:
            torch.cuda.synchronize()

    results = {}
    for dt in dtypes:
        dtype = np.dtype(dt).type
        rows = {"chain100 (len 16)": bench_chain(cp, dtype, torch),
                "nn MLP 64-128-128-10 b64": bench_nn(cp, dtype, torch),
                "MLP 64-256-256-10 b64": bench_mlp(cp, dtype, torch, [64, 256, 256, 10], 64),
                "MLP 784-1024-1024-10 b512": bench_mlp(cp, dtype, torch,
                                                       [784, 1024, 1024, 10], 512),
                "MLP 4096-4096-4096-10 b4096": bench_mlp(cp, dtype, torch,
                                                         [4096, 4096, 4096, 10], 4096)}
        h, v = bench_hessian(cp, dtype, torch, 100)
        rows["hessian tanh n=100"], rows["hvp tanh n=100"] = h, v
        h, v = bench_hessian(cp, dtype, torch, 2000)
        rows["hessian tanh n=2000"], rows["hvp tanh n=2000"] = h, v
        res = {}
        for name, row in rows.items():
            fns = {k: _synced(fn, sync) for k, fn in row.items()}
            fns["numpy"] = fns.pop("floor")  # time_row's name for the baseline
            res[name] = time_row(fns, rounds=7, target=0.05)
            print(f"[{dt}] {name}: done", file=sys.stderr, flush=True)
        results[dt] = res
    return results


def report(results, device):
    lines = [f"GPU: {device}"]
    for dt, res in results.items():
        lines.append(f"\n== {dt} ==")
        lines.append(f"{'workload':28s} {'impl':16s} {'best time':>12s} {'vs floor':>9s}")
        for name, row in res.items():
            for impl, (t, ratio) in row.items():
                lines.append(f"{name:28s} {'floor' if impl == 'numpy' else impl:16s} "
                             f"{t * 1e6:10.1f}us {ratio:8.2f}x")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="both", choices=["float32", "float64", "both"])
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    dtypes = ["float32", "float64"] if args.dtype == "both" else [args.dtype]
    results = run(dtypes)
    import cupy as cp

    device = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    print(report(results, device))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device, "results": {
                dt: {w: {i: {"seconds": t, "ratio_to_floor": r} for i, (t, r) in row.items()}
                     for w, row in res.items()} for dt, res in results.items()}}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
