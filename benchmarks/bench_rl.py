"""Policy-gradient training on CartPole-v1: calcml (``calcml.rl``) against PyTorch CPU eager
and a hand-written NumPy floor, timed in the same run.  Goal: calcml ≤ 2x PyTorch.

The workload, identical for every implementation: a 4-H-2 tanh softmax policy (and for
actor-critic a 4-H-1 critic) in float64 with the same initial weights, Adam, γ = 0.99, one
update per episode over the batch of the episode's states; actions drawn by inverse CDF from
the same stream of uniforms (``numpy.random.default_rng(seed)``), the environment reset with
the same seed.  REINFORCE weights the log-probabilities by the normalised rewards-to-go;
actor-critic by normalised GAE(λ = 0.95) advantages, the critic trained on the one-step TD
loss.  The implementations make the same choices up to rounding, so they play nearly the
same episodes; the time per environment step (everything included: acting, the environment,
the updates) is compared, as well as the totals.  Every run is played once untimed first:
PyTorch's first few thousand calls in a process are several times slower than the rest.

Variants:
  numpy        forward, backward and Adam written out in NumPy (the floor);
  calcml       ``rl.reinforce`` / ``rl.actor_critic`` (acting through ``rl.NumpyForward``);
  calcml-eager the same loop acting through the module under ``cm.no_grad()`` (the engine
               on every step);
  torch        PyTorch eager, acting under ``torch.no_grad()``.

Run:  python benchmarks/bench_rl.py [--episodes 300] [--hidden 64] [--threads 1]
      [--algo reinforce|actor-critic|both] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
from _common import set_threads

GAMMA, LAM, LR, CRITIC_LR = 0.99, 0.95, 1e-2, 3e-2


class Uniforms:
    """The uniforms that choose the actions: blocks of 4096 from default_rng(seed)."""

    def __init__(self, seed):
        self.rng, self.buf, self.i = np.random.default_rng(seed), [], 0

    def __call__(self):
        if self.i == len(self.buf):
            self.buf, self.i = self.rng.random(4096).tolist(), 0
        self.i += 1
        return self.buf[self.i - 1]


def sample(z, u):
    """Inverse-CDF sample of softmax(z) (z a list of floats) from the uniform u."""
    m = max(z)
    e = [math.exp(v - m) for v in z]
    t, acc = u * sum(e), 0.0
    for a in range(len(e) - 1):
        acc += e[a]
        if t < acc:
            return a
    return len(e) - 1


def returns_to_go(rewards, gamma):
    out, g = list(rewards), 0.0
    for t in range(len(out) - 1, -1, -1):
        g = out[t] + gamma * g
        out[t] = g
    return np.array(out)


def gae(delta, c):
    out, acc = delta.tolist(), 0.0
    for t in range(len(out) - 1, -1, -1):
        acc = out[t] + c * acc
        out[t] = acc
    return np.array(out)


def normalise(w, center=True):
    w = w - w.mean() if center else w
    return w / (w.std() + 1e-8)


def play(env, act, uniforms, seed):
    obs, _ = env.reset(seed=seed)
    states, actions, rewards = [obs], [], []
    while True:
        a = sample(act(obs), uniforms())
        obs, r, term, trunc, _ = env.step(a)
        states.append(obs)
        actions.append(a)
        rewards.append(r)
        if term or trunc:
            return (np.asarray(states, dtype=np.float64), np.asarray(actions),
                    np.asarray(rewards, dtype=np.float64), bool(term))


def initial_weights(hidden, seed):
    """(W1, b1, W2, b2) of the actor and the critic, from calcml's initialisation."""
    from calcml import rl

    actor = rl.mlp(4, 2, hidden=(hidden,), rng=seed)
    critic = rl.mlp(4, 1, hidden=(hidden,), rng=100 + seed)
    return ([np.array(p.data) for p in actor.parameters()],
            [np.array(p.data) for p in critic.parameters()])


# --- the NumPy floor --------------------------------------------------------------------------

class NpMLP:
    """A 4-H-k tanh MLP with hand-written backward and Adam (PyTorch's defaults)."""

    def __init__(self, params, lr):
        self.p = [a.copy() for a in params]
        self.m = [np.zeros_like(a) for a in self.p]
        self.v = [np.zeros_like(a) for a in self.p]
        self.t, self.lr = 0, lr
        self.refresh()

    def refresh(self):
        W1, b1, W2, b2 = self.p
        self.W1T, self.W2T, self.b1, self.b2 = W1.T.copy(), W2.T.copy(), b1.copy(), b2.copy()

    def act(self, x):
        h = x @ self.W1T
        h += self.b1
        np.tanh(h, out=h)
        z = h @ self.W2T
        z += self.b2
        return z.tolist()

    def forward(self, X):
        W1, b1, W2, b2 = self.p
        H = np.tanh(X @ W1.T + b1)
        return H, H @ W2.T + b2

    def step(self, X, H, dZ):
        W1, b1, W2, b2 = self.p
        dA = (dZ @ W2) * (1.0 - H * H)
        grads = [dA.T @ X, dA.sum(0), dZ.T @ H, dZ.sum(0)]
        self.t += 1
        c1, c2 = 1 - 0.9 ** self.t, 1 - 0.999 ** self.t
        for p, g, m, v in zip(self.p, grads, self.m, self.v):
            m *= 0.9
            m += 0.1 * g
            v *= 0.999
            v += 0.001 * g * g
            p -= self.lr * (m / c1) / (np.sqrt(v / c2) + 1e-8)
        self.refresh()


def numpy_run(env, algo, weights, episodes, seed):
    actor = NpMLP(weights[0], LR)
    critic = NpMLP(weights[1], CRITIC_LR)
    uni = Uniforms(seed)
    steps, rets = 0, []
    for ep in range(episodes):
        S, A, R, term = play(env, actor.act, uni, seed if ep == 0 else None)
        T = len(A)
        if algo == "reinforce":
            w = normalise(returns_to_go(R, GAMMA))
        else:
            Hc, V = critic.forward(S)
            v = V[:, 0]
            nxt = v[1:].copy()
            if term:
                nxt[-1] = 0.0
            y = R + GAMMA * nxt
            critic.step(S[:-1], Hc[:-1], (2.0 / T) * (v[:-1] - y)[:, None])
            w = normalise(gae(y - v[:-1], GAMMA * LAM))
        H, Z = actor.forward(S[:-1])
        P = np.exp(Z - Z.max(1, keepdims=True))
        P /= P.sum(1, keepdims=True)
        P[np.arange(T), A] -= 1.0
        actor.step(S[:-1], H, P * (w / T)[:, None])
        steps += T
        rets.append(R.sum())
    return steps, rets


# --- calcml -----------------------------------------------------------------------------------

def calcml_modules(weights, hidden, seed):
    from calcml import rl

    actor = rl.mlp(4, 2, hidden=(hidden,), rng=seed)
    critic = rl.mlp(4, 1, hidden=(hidden,), rng=100 + seed)
    for mod, ws in ((actor, weights[0]), (critic, weights[1])):
        for p, w in zip(mod.parameters(), ws):
            p.data[...] = w
    return actor, critic


def calcml_run(env, algo, weights, episodes, seed, hidden):
    import calcml as cm
    from calcml import rl

    actor, critic = calcml_modules(weights, hidden, seed)
    if algo == "reinforce":
        res = rl.reinforce(env, actor, cm.optim.adam(LR), episodes=episodes, gamma=GAMMA,
                           seed=seed)
    else:
        res = rl.actor_critic(env, actor, critic, cm.optim.adam(LR), cm.optim.adam(CRITIC_LR),
                              episodes=episodes, gamma=GAMMA, lam=LAM, seed=seed)
    return res.steps, list(res.episode_returns)


def calcml_eager_run(env, algo, weights, episodes, seed, hidden):
    """The same algorithm acting through the module itself under ``cm.no_grad()``."""
    import calcml as cm
    from calcml import rl

    actor, critic = calcml_modules(weights, hidden, seed)
    aopt = cm.optim.Optimizer(actor.parameters(), cm.optim.adam(LR))
    copt = cm.optim.Optimizer(critic.parameters(), cm.optim.adam(CRITIC_LR))
    uni = Uniforms(seed)

    def act(obs):
        with cm.no_grad():
            return actor(obs[None]).data[0].tolist()

    steps, rets = 0, []
    for ep in range(episodes):
        S, A, R, term = play(env, act, uni, seed if ep == 0 else None)
        T = len(A)
        if algo == "reinforce":
            w = normalise(returns_to_go(R, GAMMA))
        else:
            V = critic(S)[:, 0]
            v = V.data
            y = rl.td_targets(R, v[1:], term, GAMMA)
            copt.zero_grad()
            cm.mean((V[:T] - y) ** 2).backward()
            copt.step()
            w = normalise(gae(y - v[:-1], GAMMA * LAM))
        aopt.zero_grad()
        rl.reinforce_loss(actor, S[:-1], A, w).backward()
        aopt.step()
        steps += T
        rets.append(R.sum())
    return steps, rets


# --- PyTorch ----------------------------------------------------------------------------------

def torch_run(env, algo, weights, episodes, seed, hidden):
    import torch

    def build(ws, out):
        net = torch.nn.Sequential(torch.nn.Linear(4, hidden), torch.nn.Tanh(),
                                  torch.nn.Linear(hidden, out)).double()
        with torch.no_grad():
            for p, w in zip(net.parameters(), ws):
                p.copy_(torch.from_numpy(w))
        return net

    actor, critic = build(weights[0], 2), build(weights[1], 1)
    aopt = torch.optim.Adam(actor.parameters(), lr=LR)
    copt = torch.optim.Adam(critic.parameters(), lr=CRITIC_LR)
    uni = Uniforms(seed)

    def act(obs):
        with torch.no_grad():
            return actor(torch.as_tensor(obs, dtype=torch.float64)).tolist()

    steps, rets = 0, []
    for ep in range(episodes):
        S, A, R, term = play(env, act, uni, seed if ep == 0 else None)
        T = len(A)
        St = torch.from_numpy(S)
        if algo == "reinforce":
            w = normalise(returns_to_go(R, GAMMA))
        else:
            V = critic(St)[:, 0]
            v = V.detach().numpy().copy()
            nxt = v[1:].copy()
            if term:
                nxt[-1] = 0.0
            y = R + GAMMA * nxt
            copt.zero_grad()
            ((V[:T] - torch.from_numpy(y)) ** 2).mean().backward()
            copt.step()
            w = normalise(gae(y - v[:-1], GAMMA * LAM))
        logp = torch.log_softmax(actor(St[:-1]), dim=-1)[torch.arange(T), torch.from_numpy(A)]
        aopt.zero_grad()
        (-(logp * torch.from_numpy(w)).mean()).backward()
        aopt.step()
        steps += T
        rets.append(R.sum())
    return steps, rets


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=300)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--algo", default="both", choices=["reinforce", "actor-critic", "both"])
    args = ap.parse_args(argv)
    set_threads(args.threads)
    import gymnasium as gym

    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
    weights = initial_weights(args.hidden, args.seed)
    algos = ["reinforce", "actor-critic"] if args.algo == "both" else [args.algo]
    print(f"CartPole-v1, 4-{args.hidden}-2 tanh policy (+ 4-{args.hidden}-1 critic), float64, "
          f"{args.episodes} episodes, seed {args.seed}, {args.threads} thread(s), numpy "
          f"{np.__version__}")
    ok = True
    for algo in algos:
        runs = {"numpy": lambda e: numpy_run(e, algo, weights, args.episodes, args.seed),
                "calcml": lambda e: calcml_run(e, algo, weights, args.episodes, args.seed,
                                               args.hidden),
                "calcml-eager": lambda e: calcml_eager_run(e, algo, weights, args.episodes,
                                                           args.seed, args.hidden)}
        if have_torch:
            runs["torch"] = lambda e: torch_run(e, algo, weights, args.episodes, args.seed,
                                                args.hidden)
        results = {}
        for name, fn in runs.items():
            env = gym.make("CartPole-v1")
            # the first calls of a library pay one-time costs (PyTorch's dispatcher and
            # allocator warm up for seconds): play the run once untimed, then time it
            fn(env)
            env = gym.make("CartPole-v1")
            t0 = time.perf_counter()
            steps, rets = fn(env)
            dt = time.perf_counter() - t0
            results[name] = (dt, steps, rets)
        # same start, same uniforms: the first episodes must be the same everywhere
        first = {n: r[2][:3] for n, r in results.items()}
        ref = first["numpy"]
        for n, f in first.items():
            assert np.array_equal(f, ref), (algo, n, f, ref)
        print(f"\n{algo}:")
        base = results.get("torch", results["numpy"])
        base_us = base[0] / base[1] * 1e6
        print(f"{'':13s}{'wall (s)':>9s}{'env steps':>11s}{'µs/step':>9s}{'last-100 mean':>15s}"
              f"{'x torch (per step)':>20s}")
        for n, (dt, steps, rets) in results.items():
            us = dt / steps * 1e6
            print(f"{n:13s}{dt:9.2f}{steps:11d}{us:9.1f}{np.mean(rets[-100:]):15.1f}"
                  f"{us / base_us:20.2f}")
        if have_torch:
            ratio = (results["calcml"][0] / results["calcml"][1]) / (base[0] / base[1])
            good = ratio <= 2.0
            ok &= good
            print(f"goal (calcml ≤ 2x torch per step): {'met' if good else 'MISSED'} "
                  f"({ratio:.2f}x)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
