"""The training loop ``cm.train``: history, validation, early stopping, callbacks, the
non-finite guard, atomic pickle-free checkpoints, and exact resumption."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import calcml as cm

# --- fixtures -----------------------------------------------------------------------------


def _regression(n=64, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = X @ np.array([[1.0], [-2.0], [0.5]]) + 0.3
    return X, y


def _classification(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1).astype(int)
    return X, y


def _mlp(seed, dropout=0.2):
    return cm.nn.Sequential(cm.nn.Linear(4, 16, rng=seed), cm.nn.Tanh(),
                            cm.nn.Dropout(dropout, rng=seed + 1), cm.nn.Linear(16, 3, rng=seed + 2))


def _linear(seed=0):
    return cm.nn.Sequential(cm.nn.Linear(3, 1, rng=seed))


def _same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(np.array_equal(sa[k], sb[k]) for k in sa)


# --- history and validation -----------------------------------------------------------------


def test_callable_module_and_helpers():
    assert callable(cm.train)
    assert cm.train.train is not None and cm.train.History is not None
    assert "train" in cm.__all__


def test_history_records_every_epoch_and_loss_decreases():
    X, y = _regression()
    model = _linear()
    h = cm.train(model, cm.losses.mse, cm.optim.sgd(0.05), X, y, epochs=15, batch_size=16,
                 rng=0, progress=False)
    assert isinstance(h, cm.train.History)
    assert h.epochs == list(range(1, 16)) and len(h) == 15
    assert set(h.history) == {"loss", "time", "lr"}
    assert all(len(v) == 15 for v in h.history.values())
    assert h.train_loss[-1] < 1e-2 * h.train_loss[0]
    assert all(t > 0 for t in h.time)
    assert h["lr"] == [0.05] * 15
    assert h.stop_reason is None


def test_epoch_loss_is_sample_weighted_mean_of_batch_losses():
    X, y = _regression(n=10)
    model = _linear()
    seen = []
    cb = cm.train.LambdaCallback(on_batch_end=lambda run, b, logs: seen.append(logs))
    h = cm.train(model, "mse", cm.optim.sgd(0.01), X, y, epochs=1, batch_size=4, rng=0,
                 callbacks=[cb], progress=False)
    assert [s["size"] for s in seen] == [4, 4, 2]
    assert [s["step"] for s in seen] == [1, 2, 3]
    expected = sum(s["loss"] * s["size"] for s in seen) / 10
    assert h.train_loss[0] == pytest.approx(expected, rel=1e-15)


def test_validation_runs_in_eval_mode_without_grad():
    X, y = _classification()
    Xv, yv = _classification(n=30, seed=1)
    model = _mlp(0, dropout=0.5)
    modes = []

    class Probe(cm.train.Callback):
        def on_batch_end(self, run, batch, logs):
            modes.append(run.model.training)

    h = cm.train(model, cm.losses.cross_entropy, cm.optim.adam(1e-2), X, y, epochs=3,
                 batch_size=16, rng=0, validation_data=(Xv, yv), metrics="accuracy",
                 callbacks=[Probe()], progress=False)
    assert all(modes)  # training mode during the batches
    assert model.training  # the mode it had before is restored
    # the last val loss is the eval-mode (deterministic, dropout off) loss of the final model
    model.eval()
    with cm.no_grad():
        out = model(Xv)
    assert h.val_loss[-1] == pytest.approx(float(cm.losses.cross_entropy(yv, out.data)),
                                           rel=1e-12)
    acc = float(np.mean(out.data.argmax(1) == yv))
    assert h["val_accuracy"][-1] == pytest.approx(acc)
    assert 0.0 <= h["accuracy"][-1] <= 1.0
    assert not any(p.grad is not None and not np.isfinite(p.grad).all()
                   for p in model.parameters())


def test_float32_model_stays_float32_with_float64_data():
    X, y = _regression()
    model = cm.nn.Sequential(cm.nn.Linear(3, 1, rng=0, dtype=np.float32))
    cm.train(model, "mse", cm.optim.adam(1e-2), X, y, epochs=2, batch_size=16, rng=0,
             progress=False)
    assert all(p.data.dtype == np.float32 for p in model.parameters())


def test_progress_bar_writes_to_stderr(capsys):
    X, y = _regression(n=16)
    cm.train(_linear(), "mse", cm.optim.sgd(0.01), X, y, epochs=2, batch_size=8, rng=0,
             progress=True)
    err = capsys.readouterr().err
    assert "calcml.train" in err and "4/4" in err


def test_invalid_arguments_are_refused():
    X, y = _regression(n=8)
    with pytest.raises(ValueError, match="same number of rows"):
        cm.train(_linear(), "mse", cm.optim.sgd(0.1), X, y[:5], progress=False)
    with pytest.raises(TypeError, match="optimizer must be"):
        cm.train(_linear(), "mse", "adam", X, y, progress=False)
    with pytest.raises(ValueError, match="unknown loss"):
        cm.train(_linear(), "nope", cm.optim.sgd(0.1), X, y, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        cm.train(_linear(), "mse", cm.optim.sgd(0.1), X, y, batch_size=0, progress=False)


# --- early stopping and callbacks -----------------------------------------------------------


def test_early_stopping_stops_after_patience_without_improvement():
    X, y = _regression()
    h = cm.train(_linear(), "mse", cm.optim.sgd(0.0), X, y, epochs=50, batch_size=16, rng=0,
                 early_stopping=dict(monitor="loss", patience=3), progress=False)
    # lr = 0: epoch 1 sets the best, epochs 2, 3, 4 do not improve on it
    assert len(h) == 4
    assert h.stop_reason.startswith("early stopping: loss did not improve")


def test_early_stopping_restores_the_best_weights():
    X, y = _regression()
    snapshots = []
    model = _linear()
    # validating on -y: the better the fit to y, the worse the validation loss
    h = cm.train(model, "mse", cm.optim.sgd(0.05), X, y, epochs=30, batch_size=16, rng=0,
                 validation_data=(X, -y), early_stopping=cm.train.EarlyStopping(patience=2),
                 callbacks=[lambda e, logs: snapshots.append(model.state_dict())],
                 progress=False)
    best = int(np.argmin(h.val_loss))
    assert len(h) == best + 1 + 2
    final = model.state_dict()
    assert all(np.array_equal(final[k], snapshots[best][k]) for k in final)
    assert not all(np.array_equal(final[k], snapshots[-1][k]) for k in final)


def test_function_callback_stops_training_and_hooks_run_in_order():
    X, y = _regression(n=20)
    events = []

    class Recorder(cm.train.Callback):
        def on_train_begin(self, run):
            events.append("begin")

        def on_epoch_begin(self, run, epoch):
            events.append(f"e{epoch}")

        def on_batch_end(self, run, batch, logs):
            events.append("b")

        def on_epoch_end(self, run, epoch, logs):
            assert logs["epoch"] == epoch and "loss" in logs
            events.append(f"/e{epoch}")

        def on_train_end(self, run):
            events.append("end")

    h = cm.train(_linear(), "mse", cm.optim.sgd(0.01), X, y, epochs=10, batch_size=10, rng=0,
                 callbacks=[Recorder(), lambda epoch, logs: epoch == 2], progress=False)
    assert len(h) == 2
    assert "callback" in h.stop_reason
    assert events == ["begin", "e1", "b", "b", "/e1", "e2", "b", "b", "/e2", "end"]


def test_run_stop_training_flag_stops():
    X, y = _regression(n=20)

    class Stop(cm.train.Callback):
        def on_batch_end(self, run, batch, logs):
            if run.step == 3:
                run.stop_training = True

    h = cm.train(_linear(), "mse", cm.optim.sgd(0.01), X, y, epochs=10, batch_size=10, rng=0,
                 callbacks=[Stop()], progress=False)
    assert len(h) == 2  # the epoch in progress is finished


# --- the non-finite guard -------------------------------------------------------------------


def test_nan_loss_stops_with_epoch_and_batch():
    X, y = _regression(n=20)
    X[9, 1] = np.nan  # in batch 3 of 4 (no shuffling)
    model = _linear()
    before = []
    cb = cm.train.LambdaCallback(on_batch_end=lambda run, b, logs: before.append(
        model.state_dict()))
    with pytest.raises(cm.train.NonFiniteError, match=r"loss is nan at epoch 1, batch 3") as ei:
        cm.train(model, "mse", cm.optim.sgd(0.01), X, y, epochs=3, batch_size=4,
                 shuffle=False, callbacks=[cb], progress=False)
    err = ei.value
    assert isinstance(err, FloatingPointError)
    assert (err.kind, err.epoch, err.batch, err.step) == ("loss", 1, 3, 2)
    # no update was applied with the bad batch: parameters are those after step 2
    assert _same_state_dict(model.state_dict(), before[-1])


def _same_state_dict(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a)


class _ScaleShift(cm.nn.Module):
    """y = scale * x + sqrt(offset): a zero offset gives an infinite gradient for it only."""

    def __init__(self):
        super().__init__()
        self.scale = cm.tensor(np.ones(1), requires_grad=True)
        self.offset = cm.tensor(np.ones(1), requires_grad=True)

    def forward(self, x):
        return x * self.scale + cm.sqrt(self.offset)


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")
def test_nonfinite_gradient_names_the_parameter():
    X = np.linspace(-1, 1, 8)[:, None]
    y = 3.0 * X
    model = _ScaleShift()
    model.offset.data[...] = 0.0  # finite loss, d/d offset = r / sqrt(0) = ±inf
    with pytest.raises(cm.train.NonFiniteError,
                       match=r"gradient of parameter 'offset' is not finite .* at epoch 1, "
                             r"batch 1") as ei:
        cm.train(model, "mse", cm.optim.sgd(0.1), X, y, epochs=2, batch_size=8,
                 progress=False)
    assert ei.value.kind == "gradient" and ei.value.parameter == "offset"
    assert np.isfinite(ei.value.value)
    assert model.scale.data[0] == 1.0  # the step was not taken


class _Gain(cm.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = cm.tensor(np.full(4, 1e-38, np.float32), requires_grad=True)

    def forward(self, x):
        return x * self.w


def test_finite_gradients_whose_sum_overflows_do_not_stop_training():
    # the cheap test sums every gradient entry: four finite float32 entries of 2e38 overflow
    # that sum (a false alarm), which the entry-by-entry test clears, so the step is taken
    X = np.ones((2, 4), np.float32)
    model = _Gain()

    def big(y, out):
        return cm.sum(out * np.float32(2e38)) * np.float32(0.5)

    with np.errstate(over="ignore"):
        hist = cm.train(model, big, cm.optim.sgd(1e-40), X, np.zeros(2), epochs=2,
                        batch_size=2, progress=False)
    assert len(hist.history["loss"]) == 2 and np.all(np.isfinite(hist.history["loss"]))
    assert np.all(np.isfinite(model.w.data)) and np.all(model.w.data < 0)  # stepped twice
    from calcml.train import _grads_finite

    with np.errstate(over="ignore"):
        assert not _grads_finite([model.w])  # the cheap test alone would have stopped it


def test_nonfinite_guard_can_be_turned_off():
    X, y = _regression(n=8)
    X[0, 0] = np.inf
    h = cm.train(_linear(), "mse", cm.optim.sgd(0.01), X, y, epochs=1, batch_size=8,
                 check_finite=False, progress=False)
    assert not np.isfinite(h.train_loss[0])


# --- saving without pickle, atomically --------------------------------------------------------


def test_save_state_roundtrip_and_no_pickle(tmp_path):
    p = tmp_path / "s.npz"
    cm.train.save_state(p, {"a": np.arange(3.0), "t": cm.tensor([1.0, 2.0]), "s": "text",
                            "i": np.int64(7)})
    d = cm.train.load_state(p)
    assert np.array_equal(d["a"], np.arange(3.0)) and str(d["s"]) == "text"
    assert np.array_equal(d["t"], [1.0, 2.0]) and int(d["i"]) == 7
    with pytest.raises(TypeError, match="object array"):
        cm.train.save_state(tmp_path / "o.npz", {"o": np.array([{"x": 1}], dtype=object)})
    assert not (tmp_path / "o.npz").exists()


def test_load_refuses_pickled_content(tmp_path):
    p = tmp_path / "evil.npz"
    np.savez(p, model=np.array([{"x": 1}], dtype=object))  # needs pickle to read
    with pytest.raises(ValueError, match="allow_pickle"):
        cm.train.load_state(p)
    with pytest.raises(ValueError, match="allow_pickle"):
        cm.train.load_checkpoint(p)


def test_failing_write_leaves_old_file_intact(tmp_path, monkeypatch):
    p = tmp_path / "ck.npz"
    cm.train.save_state(p, {"w": np.zeros(1000)})
    old_bytes = p.read_bytes()
    real = np.lib.format.write_array
    calls = []

    def failing(fp, array, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the first array is written, the second fails mid-file
            fp.write(b"partial")
            raise OSError("disk full")
        return real(fp, array, *args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", failing)
    with pytest.raises(OSError, match="disk full"):
        cm.train.save_state(p, {"w": np.ones(1000), "v": np.ones(5)})
    monkeypatch.undo()
    assert len(calls) == 2
    assert p.read_bytes() == old_bytes
    assert np.array_equal(cm.train.load_state(p)["w"], np.zeros(1000))
    assert sorted(os.listdir(tmp_path)) == ["ck.npz"]  # the temporary file is gone


def test_failing_checkpoint_during_training_keeps_previous_epoch(tmp_path, monkeypatch):
    X, y = _regression()
    p = tmp_path / "ck.npz"
    real = cm.train.save_state
    n = []

    def flaky(path, state):
        n.append(1)
        if len(n) == 2:
            raise OSError("no space left")
        return real(path, state)

    monkeypatch.setattr(cm.train, "save_state", flaky)
    with pytest.raises(OSError):
        cm.train(_linear(), "mse", cm.optim.adam(1e-2), X, y, epochs=3, batch_size=16, rng=0,
                 checkpoint=p, progress=False)
    monkeypatch.undo()
    ck = cm.train.load_checkpoint(p)
    assert ck.epoch == 1 and len(ck.history) == 1
    assert os.listdir(tmp_path) == ["ck.npz"]


def test_checkpoint_contents_are_plain_arrays(tmp_path):
    X, y = _classification()
    p = tmp_path / "ck.npz"
    model = _mlp(0)
    cm.train(model, "cross_entropy", cm.optim.adam(1e-2), X, y, epochs=2, batch_size=16,
             rng=3, checkpoint=p, progress=False)
    with np.load(p, allow_pickle=False) as z:
        kinds = {k: z[k].dtype.kind for k in z.files}
        rng_text = str(z["rng.train"][()])
        assert int(z["epoch"]) == 2 and int(z["step"]) == 8
    assert "O" not in kinds.values()
    assert {"model.0.weight", "model.3.bias", "optimizer.state.0.mu.0", "rng.train",
            "rng.module.2.generator", "history.loss"} <= set(kinds)
    assert json.loads(rng_text)["bit_generator"] == "PCG64"


def test_save_model_and_load_model(tmp_path):
    p = tmp_path / "m.npz"
    a, b = _mlp(0), _mlp(5)
    assert not _same_state(a, b)
    cm.train.save_model(a, p)
    assert cm.train.load_model(b, p) is b
    assert _same_state(a, b)
    wrong = cm.nn.Sequential(cm.nn.Linear(4, 8, rng=0))
    with pytest.raises(ValueError, match="0.weight"):
        cm.train.load_model(wrong, p)


@pytest.mark.parametrize("bitgen", [np.random.PCG64, np.random.MT19937, np.random.Philox])
def test_generator_state_roundtrip_as_text(bitgen):
    g = np.random.Generator(bitgen(123))
    g.random(5)
    text = cm.train.rng_state_to_str(g)
    expected = g.random(4)
    h = np.random.Generator(bitgen(999))
    cm.train.rng_state_from_str(h, text)
    assert np.array_equal(h.random(4), expected)
    with pytest.raises(ValueError, match="bit generator"):
        other = np.random.SFC64 if bitgen is not np.random.SFC64 else np.random.PCG64
        cm.train.rng_state_from_str(np.random.Generator(other(0)), text)


# --- exact resumption ---------------------------------------------------------------------


def _run(model, epochs, *, checkpoint=None, resume=None, seed=1):
    X, y = _classification()
    Xv, yv = _classification(n=24, seed=7)
    sched = cm.optim.exponential_decay(3e-2, 0.9)
    opt = cm.optim.Optimizer(model.parameters(), cm.optim.chain(
        cm.optim.clip_by_global_norm(5.0), cm.optim.adam(sched)))
    return cm.train(model, cm.losses.cross_entropy, opt, X, y, epochs=epochs, batch_size=7,
                    rng=seed, validation_data=(Xv, yv), metrics="accuracy",
                    early_stopping=dict(patience=50), checkpoint=checkpoint, resume=resume,
                    progress=False), opt


def test_resume_continues_the_exact_trajectory(tmp_path):
    p = tmp_path / "ck.npz"
    straight, opt_s = _run(_mlp(0), 4)
    first, _ = _run(_mlp(0), 2, checkpoint=p)
    assert len(first) == 2
    # new objects: other initial weights, another dropout seed, another batch seed
    resumed_model = _mlp(100)
    resumed, opt_r = _run(resumed_model, 4, checkpoint=p, resume=p, seed=12345)
    assert resumed.epochs == [1, 2, 3, 4]
    for key in ("loss", "val_loss", "accuracy", "val_accuracy", "lr"):
        assert resumed[key] == straight[key], key  # bit-identical floats
    model_s = _mlp(0)
    _run(model_s, 4)
    assert _same_state(model_s, resumed_model)
    so, ro = opt_s.state_dict(), opt_r.state_dict()
    assert all(np.array_equal(so[k], ro[k]) for k in so)
    assert cm.train.load_checkpoint(p).epoch == 4


def test_resume_without_the_generator_state_diverges(tmp_path):
    # the same experiment, restoring only the model and optimizer: the batches differ
    p = tmp_path / "ck.npz"
    ref = _mlp(0)
    _run(ref, 4)
    _run(_mlp(0), 2, checkpoint=p)
    model = _mlp(100)
    X, y = _classification()
    opt = cm.optim.Optimizer(model.parameters(), cm.optim.chain(
        cm.optim.clip_by_global_norm(5.0), cm.optim.adam(cm.optim.exponential_decay(3e-2, 0.9))))
    cm.train.load_checkpoint(p, model, opt)
    cm.train(model, "cross_entropy", opt, X, y, epochs=2, batch_size=7, rng=1, progress=False)
    assert not _same_state(ref, model)


def test_resume_in_a_new_process_is_bit_identical(tmp_path):
    p, out = tmp_path / "ck.npz", tmp_path / "final.npz"
    model = _mlp(0)
    _run(model, 4)
    _run(_mlp(0), 2, checkpoint=p)
    here = os.path.dirname(os.path.abspath(__file__))
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {here!r})
        import calcml as cm
        from test_train import _mlp, _run
        m = _mlp(7)
        _run(m, 4, checkpoint={str(p)!r}, resume={str(p)!r}, seed=99)
        cm.train.save_model(m, {str(out)!r})
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    other = cm.train.load_model(_mlp(3), out)
    assert _same_state(model, other)


def test_resume_true_starts_fresh_then_continues(tmp_path):
    p = tmp_path / "ck.npz"
    h1, _ = _run(_mlp(0), 2, checkpoint=p, resume=True)  # no file yet: a fresh run
    assert len(h1) == 2
    h2, _ = _run(_mlp(0), 3, checkpoint=p, resume=True)
    assert h2.epochs == [1, 2, 3] and h2["loss"][:2] == h1["loss"]


def test_resume_after_early_stop_does_nothing_more(tmp_path):
    X, y = _regression()
    p = tmp_path / "ck.npz"
    h = cm.train(_linear(), "mse", cm.optim.sgd(0.0), X, y, epochs=50, batch_size=16, rng=0,
                 early_stopping=dict(monitor="loss", patience=2), checkpoint=p, progress=False)
    assert len(h) == 3
    h2 = cm.train(_linear(5), "mse", cm.optim.sgd(0.0), X, y, epochs=50, batch_size=16, rng=0,
                  early_stopping=dict(monitor="loss", patience=2), resume=p, progress=False)
    assert len(h2) == 3 and h2.stop_reason == h.stop_reason


def test_load_checkpoint_refuses_a_different_model(tmp_path):
    p = tmp_path / "ck.npz"
    _run(_mlp(0), 1, checkpoint=p)
    other = cm.nn.Sequential(cm.nn.Linear(4, 16, rng=0), cm.nn.Tanh(), cm.nn.Linear(16, 3, rng=0))
    with pytest.raises(ValueError, match="3.weight"):
        cm.train.load_checkpoint(p, other)
    with pytest.raises(ValueError, match="not a calcml checkpoint"):
        q = tmp_path / "plain.npz"
        cm.train.save_state(q, {"w": np.zeros(2)})
        cm.train.load_checkpoint(q)


def test_a_refused_resume_changes_nothing(tmp_path):
    # the checkpoint was made with Adam; resuming with SGD is refused after the model's
    # weights and generators matched: they must be put back as they were
    p = tmp_path / "ck.npz"
    X, y = _classification()
    cm.train(_mlp(0), cm.losses.cross_entropy, cm.optim.adam(0.01), X, y, epochs=2,
             batch_size=16, rng=0, progress=False, checkpoint=p)
    model = _mlp(5)
    before = model.state_dict()
    drop_state = model[2].generator.bit_generator.state
    gen = np.random.default_rng(9)
    gen_state = gen.bit_generator.state
    with pytest.raises(ValueError, match="optimizer|keys"):
        cm.train(model, cm.losses.cross_entropy, cm.optim.sgd(0.1), X, y, epochs=3,
                 batch_size=16, rng=gen, progress=False, resume=p)
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert gen.bit_generator.state == gen_state
    assert model[2].generator.bit_generator.state == drop_state


def test_loss_and_batch_problems_are_named():
    X, y = _regression(n=5)
    with pytest.raises(ValueError, match=r"drop_last.*batch_size=8.*5 rows"):
        cm.train(_linear(), cm.losses.mse, cm.optim.sgd(0.1), X, y, batch_size=8,
                 drop_last=True, progress=False)
    with pytest.raises(ValueError, match=r"calcml.train: the loss must be a scalar.*\(5, 1\)"):
        cm.train(_linear(), lambda t, p: (p - t) ** 2, cm.optim.sgd(0.1), X, y, batch_size=8,
                 progress=False)
    Xv = X.copy()
    Xv[1, 0] = np.nan
    with pytest.raises(cm.train.NonFiniteError, match="validation loss is nan after epoch 1") \
            as info:
        cm.train(_linear(), cm.losses.mse, cm.optim.sgd(0.1), X, y, batch_size=8,
                 validation_data=(Xv, y), early_stopping=1, progress=False)
    assert info.value.kind == "val_loss" and info.value.epoch == 1


_UNSEEDED = """
import numpy as np, calcml as cm
X = np.random.default_rng(3).normal(size=(48, 4)); y = (X[:, 0] > 0).astype(int)
model = cm.nn.Sequential(cm.nn.Linear(4, 8), cm.nn.ReLU(), cm.nn.Dropout(0.2), cm.nn.Linear(8, 2))
h = cm.train(model, cm.losses.cross_entropy, cm.optim.sgd(0.1), X, y, epochs=3, batch_size=8,
             progress=False)
print(repr(h["loss"]), repr(float(model[0].weight.data.sum())))
"""


def test_a_run_without_any_seed_repeats_exactly_in_a_new_process():
    # rng=None everywhere (weights, dropout masks, batches): the same numbers on every run.
    import subprocess
    import sys

    outs = [subprocess.run([sys.executable, "-c", _UNSEEDED], capture_output=True, text=True,
                           check=True).stdout for _ in range(2)]
    assert outs[0] == outs[1] and "nan" not in outs[0]


def test_default_generator_manual_seed_and_minibatches_without_rng():
    cm.nn.init.manual_seed(5)
    a1, a2 = cm.nn.Linear(3, 3).weight.data, cm.nn.Linear(3, 3).weight.data
    assert not np.array_equal(a1, a2)  # two layers made in turn differ
    cm.nn.init.manual_seed(5)
    assert np.array_equal(cm.nn.Linear(3, 3).weight.data, a1)
    with pytest.raises(TypeError, match="manual_seed"):
        cm.nn.init.manual_seed(-1)
    b1 = list(cm.train.minibatches(10, 4))
    b2 = list(cm.train.minibatches(10, 4, None))
    assert all(np.array_equal(u, v) for u, v in zip(b1, b2))
    assert sorted(np.concatenate(b1).tolist()) == list(range(10))
