"""Training throughput of a digits MLP: calcml (``cm.nn`` + ``cm.optim`` + ``cm.losses``)
against a hand-written NumPy forward/backward/update (the floor for a NumPy engine) and PyTorch
CPU eager (when installed), timed in the same run.  Goal (issue 4): ≤ 1.3x the floor and faster
than PyTorch eager.

The workload: scikit-learn's digits (the 70 % training split, 1,257 images of 64 pixels,
standardized), an MLP 64-H-H-10 with ReLU, softmax cross-entropy, SGD with momentum 0.9,
mini-batches of B; one epoch = every batch once, in a fixed shuffled order.

Timing interleaves NumPy and calcml epoch by epoch and reports the median of the per-round
ratios (robust to load from other processes) next to each side's best epoch; PyTorch runs in a
block of its own (its worker threads and OpenBLAS's would fight over the cores if interleaved)
and is compared by best epochs.

Run:  python benchmarks/bench_nn.py [--hidden 128] [--batch 64] [--dtype float32|float64]
      [--threads 2] [--epochs 5] [--rounds 21]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from _common import reexec_with_malloc_tuning, set_threads


def load_data(dtype):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_tr, _, y_tr, _ = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    X_tr = (X_tr - X_tr.mean(0)) / (X_tr.std(0) + 1e-8)
    return X_tr.astype(dtype), y_tr


def init_params(sizes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for fi, fo in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / np.sqrt(fi)
        out.append((rng.uniform(-bound, bound, size=(fo, fi)).astype(dtype),
                    rng.uniform(-bound, bound, size=fo).astype(dtype)))
    return out


def batches(n, batch, seed):
    order = np.random.default_rng(seed).permutation(n)
    return [order[i:i + batch] for i in range(0, n, batch)]


# --- the NumPy floor ------------------------------------------------------------------------

def numpy_epoch(params, bufs, X, y, idx_list, lr, mom):
    n_layers = len(params)
    loss_sum = 0.0
    for idx in idx_list:
        x, t = X[idx], y[idx]
        b = x.shape[0]
        acts, h = [x], x
        for i, (w, bias) in enumerate(params):
            z = h @ w.T + bias
            h = np.maximum(z, 0) if i < n_layers - 1 else z
            acts.append(h)
        z = acts[-1]
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)
        loss_sum += float(np.log(s[:, 0]).sum() - z[np.arange(b), t].sum()) / b
        g = e / s
        g[np.arange(b), t] -= 1.0
        g /= b
        for i in reversed(range(n_layers)):
            w, bias = params[i]
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
    return loss_sum / len(idx_list)


# --- calcml -----------------------------------------------------------------------------------

def calcml_setup(sizes, dtype, lr, mom):
    import calcml as cm

    layers = []
    for i, (w, b) in enumerate(init_params(sizes, dtype)):
        lin = cm.nn.Linear(w.shape[1], w.shape[0], rng=0, dtype=dtype)
        lin.weight.data[...] = w
        lin.bias.data[...] = b
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(cm.nn.ReLU())
    model = cm.nn.Sequential(*layers)
    opt = cm.optim.Optimizer(model.parameters(), cm.optim.sgd(lr, momentum=mom))
    return model, opt


def calcml_epoch(cm, model, opt, X, y, idx_list):
    loss_sum = 0.0
    for idx in idx_list:
        opt.zero_grad()
        loss = cm.losses.cross_entropy(y[idx], model(X[idx]))
        loss.backward()
        opt.step()
        loss_sum += float(loss)
    return loss_sum / len(idx_list)


# --- PyTorch ----------------------------------------------------------------------------------

def torch_setup(torch, sizes, dtype, lr, mom):
    layers = []
    for i, (w, b) in enumerate(init_params(sizes, dtype)):
        lin = torch.nn.Linear(w.shape[1], w.shape[0], dtype=getattr(torch, np.dtype(dtype).name))
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=mom)
    return model, opt


def torch_epoch(torch, model, opt, X, y, idx_list):
    loss_fn = torch.nn.functional.cross_entropy
    loss_sum = 0.0
    for idx in idx_list:
        opt.zero_grad()
        loss = loss_fn(model(X[idx]), y[idx])
        loss.backward()
        opt.step()
        loss_sum += loss.item()
    return loss_sum / len(idx_list)


def _timed(fn, r):
    t0 = time.perf_counter()
    fn(r)
    return time.perf_counter() - t0


def interleaved(fns, rounds):
    """Time one epoch of each implementation per round, one after the other, so that a burst
    of load from elsewhere on the machine hits all of them alike.

    Returns ``{name: (best seconds per epoch, median over rounds of its time / the NumPy
    floor's time in the same round)}``.
    """
    times = {name: [] for name in fns}
    for r in range(rounds):
        for name, fn in fns.items():
            times[name].append(_timed(fn, r))
    base = times["numpy"]
    return {name: (min(ts), float(np.median([t / b for t, b in zip(ts, base)])))
            for name, ts in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=5, help="distinct shuffled epochs cycled")
    ap.add_argument("--rounds", type=int, default=21, help="interleaved timing rounds")
    ap.add_argument("--system-malloc", action="store_true",
                    help="keep glibc's default trimming (noisier: random page faults)")
    args = ap.parse_args(argv)
    if not args.system_malloc:
        reexec_with_malloc_tuning()
    set_threads(args.threads)
    import calcml as cm

    dtype = np.dtype(args.dtype).type
    X, y = load_data(dtype)
    sizes = [64, args.hidden, args.hidden, 10]
    lr, mom = 0.05, 0.9
    n = X.shape[0]
    idx_lists = [batches(n, args.batch, seed) for seed in range(args.epochs + 1)]

    # same start, same batches: the first epoch's mean loss must agree
    p_np = [tuple(a.copy() for a in p) for p in init_params(sizes, dtype)]
    b_np = [(np.zeros_like(w), np.zeros_like(b)) for w, b in p_np]
    model, opt = calcml_setup(sizes, dtype, lr, mom)
    l_np = numpy_epoch(p_np, b_np, X, y, idx_lists[0], lr, mom)
    l_cm = calcml_epoch(cm, model, opt, X, y, idx_lists[0])
    assert abs(l_np - l_cm) < 1e-3 * max(1.0, abs(l_np)), (l_np, l_cm)

    epochs = [idx_lists[1 + r % args.epochs] for r in range(args.rounds)]
    fns = {"numpy": lambda r: numpy_epoch(p_np, b_np, X, y, epochs[r], lr, mom),
           "calcml": lambda r: calcml_epoch(cm, model, opt, X, y, epochs[r])}
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        tm, topt = torch_setup(torch, sizes, dtype, lr, mom)
        tX, ty = torch.from_numpy(X), torch.from_numpy(y)
        l_t = torch_epoch(torch, tm, topt, tX, ty, [torch.from_numpy(i) for i in idx_lists[0]])
        assert abs(l_np - l_t) < 1e-3 * max(1.0, abs(l_np)), (l_np, l_t)
        t_epochs = [[torch.from_numpy(i) for i in e] for e in epochs]
        fns["torch"] = lambda r: torch_epoch(torch, tm, topt, tX, ty, t_epochs[r])
    torch_fn = fns.pop("torch", None)
    for fn in fns.values():
        fn(0)
    results = interleaved(fns, args.rounds)
    if torch_fn is not None:
        # PyTorch in a block of its own: interleaved with NumPy its worker threads and
        # OpenBLAS's (which keep spinning for a while after each call) would fight over the
        # cores.  Its best epoch is compared with the best NumPy epoch.
        time.sleep(0.5)
        torch_fn(0)  # warm-up: PyTorch's first calls are slow
        best = min(_timed(torch_fn, r) for r in range(args.rounds))
        results["torch"] = (best, best / results["numpy"][0])

    print(f"digits MLP {'-'.join(map(str, sizes))}, batch {args.batch}, {args.dtype}, "
          f"{args.threads} threads, {n} samples/epoch, numpy {np.__version__}")
    for name, (t, ratio) in results.items():
        how = ("best epochs" if name == "torch" else
               f"median of {args.rounds} interleaved rounds")
        print(f"{name:8s} {t * 1e3:8.2f} ms/epoch (best)  {n / t:10.0f} samples/s  "
              f"{ratio:5.2f}x numpy ({how})")
    ok = results["calcml"][1] <= 1.3
    if "torch" in results:
        ok &= results["calcml"][0] < results["torch"][0]
    print("goal (<= 1.3x numpy and faster than torch eager):", "met" if ok else "MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
