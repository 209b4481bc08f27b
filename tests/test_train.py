"""dlgpu train: the digits, the two networks, the static-buffer step, the command, and the GPU graph.

scikit-learn is needed here (the digits ship with it): it belongs to the test
extra, so these tests do not skip without it.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import types
import warnings

import numpy as np
import pytest

from dlgpu import nn, optim, train
from dlgpu.cli import main as cli_main
from dlgpu.train import models
from dlgpu.train.data import figure1_curves, load_digits
from dlgpu.train.loop import loss_function
from dlgpu.errors import ArgumentError, BackendUnavailableError, ShapeError

D = train.DEFAULTS


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def run_cli(capsys, *argv) -> tuple[int, str]:
    status = cli_main(["train", *argv])
    return status, capsys.readouterr().out


def accuracy_line(out: str) -> str:
    match = re.search(r"test accuracy [0-9.]+% \(\d+/\d+\)", out)
    assert match, out
    return match.group(0)


# ---------------------------------------------------------------------------
# the data
# ---------------------------------------------------------------------------


def test_digits_are_float32_nchw_in_unit_range_with_a_fixed_stratified_split(digits):
    x_train, y_train, x_test, y_test = digits
    assert x_train.shape == (1437, 1, 8, 8) and x_test.shape == (360, 1, 8, 8)  # scikit-learn rounds the test up
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert x_train.flags.c_contiguous and x_test.flags.c_contiguous
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    # every class in both sets, in proportion (within one image of 20%: the test set's 360 do not divide evenly)
    per_class = np.bincount(y_train, minlength=10) + np.bincount(y_test, minlength=10)
    assert np.all(np.abs(np.bincount(y_test, minlength=10) - 0.2 * per_class) < 1)
    # the same seed gives the same split; another seed another one
    again = load_digits()
    assert all(np.array_equal(a, b) for a, b in zip(digits, again))
    other = load_digits(seed=1)
    assert not np.array_equal(other[1], y_train)
    # no image is in both sets, and none is lost
    assert len(x_train) + len(x_test) == 1797


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, "0.2", True])
def test_load_digits_refuses_a_bad_fraction(bad):
    with pytest.raises(ArgumentError, match="test_fraction"):
        load_digits(test_fraction=bad)


def test_missing_scikit_learn_says_which_extra_to_install(monkeypatch, capsys):
    # None in sys.modules makes the import fail as if the package were absent.
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(BackendUnavailableError, match=r"scikit-learn.*\.\[examples\]"):
        load_digits()
    status, out = run_cli(capsys, "--backend", "cpu", "--epochs", "0")
    assert status == 1
    assert "scikit-learn" in out and ".[examples]" in out


# ---------------------------------------------------------------------------
# the networks
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", [name for name in models.MODELS if models.DATA[name] == "digits"])
@pytest.mark.parametrize("activation", models.ACTIVATIONS)
def test_networks_map_digits_to_ten_scores_and_train_through_every_layer(name, activation, digits):
    model = models.build(name, activation, rng=np.random.default_rng(0))
    x, labels = digits[0][:5], digits[1][:5]
    logits = model(x)
    assert logits.shape == (5, 10) and logits.dtype == np.float32
    loss_fn = nn.SoftmaxCrossEntropy()
    loss_fn(logits, labels)
    model.zero_grad()
    model.backward(loss_fn.backward())
    # every parameter receives a gradient (a layer left out of backward would keep zeros)
    assert all(np.any(p.grad != 0) for p in model.parameters())
    kinds = [type(m).__name__ for m in model]
    assert kinds.count("Tanh") == (0 if activation == "relu" else (3 if name == "lenet" else 2))
    if name == "lenet":
        assert kinds.count("Conv2d") == 2 and kinds.count("MaxPool2d") == 2 and kinds.count("Linear") == 2


def test_the_seed_fixes_the_initial_weights():
    a, b = (train.initial_model("lenet", "relu", seed=5).state_dict() for _ in range(2))
    c = train.initial_model("lenet", "relu", seed=6).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["0.weight"], c["0.weight"])


def test_build_refuses_unknown_names():
    with pytest.raises(ArgumentError, match="resnet"):
        models.build("resnet")
    with pytest.raises(ArgumentError, match="sigmoid"):
        models.mlp("sigmoid")


# ---------------------------------------------------------------------------
# the static-buffer step (what the GPU captures), eager on NumPy
# ---------------------------------------------------------------------------


def test_static_step_matches_a_plain_training_loop_and_keeps_its_buffers(digits):
    x_train, y_train = digits[0], digits[1]
    batch, steps = 16, 4
    batches = [np.arange(i * batch, (i + 1) * batch)[::-1] for i in range(steps)]

    plain = train.initial_model("lenet", "relu", seed=1)
    plain_opt = optim.SGD(plain.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    plain_loss_fn = nn.SoftmaxCrossEntropy()
    losses, hits = [], 0
    for idx in batches:
        plain_opt.zero_grad()
        logits = plain(x_train[idx])
        losses.append(float(plain_loss_fn(logits, y_train[idx])))
        hits += int((logits.argmax(axis=1) == y_train[idx]).sum())
        plain.backward(plain_loss_fn.backward())
        plain_opt.step()

    model = train.initial_model("lenet", "relu", seed=1)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    step = train.StaticStep(model, nn.SoftmaxCrossEntropy(), opt, (batch, 1, 8, 8))
    buffers = (step.x, step.labels, step.loss_sum, step.correct)
    for idx in batches:
        step.load(x_train, y_train, idx)
        assert np.array_equal(step.x, x_train[idx]) and np.array_equal(step.labels, y_train[idx])
        step()
    # the same arrays throughout: a captured graph keeps pointing at them
    assert all(a is b for a, b in zip(buffers, (step.x, step.labels, step.loss_sum, step.correct)))
    assert float(step.loss_sum) == pytest.approx(sum(losses), rel=1e-12)
    assert int(step.correct) == hits
    for (name, a), b in zip(model.state_dict().items(), plain.state_dict().values()):
        assert np.array_equal(a, b), name
    step.reset_totals()
    assert float(step.loss_sum) == 0.0 and int(step.correct) == 0


class FakeCupy:
    """A stand-in for CuPy whose arrays are NumPy's, with a stream capture that behaves like CUDA's.

    Work queued during a real capture is recorded, not run.  Here the
    StaticStep called during capture runs on NumPy and everything it changed
    (parameters, gradients, velocities, buffers, totals) is put back, so it
    counts as not run; launching the graph runs that step.  ``capture_error``
    makes begin_capture fail instead, as an unsupported operation would.
    """

    def __init__(self, monkeypatch, capture_error: Exception | None = None):
        self.log: list[str] = []
        self.capturing = False
        self.captured = None
        fake = self
        real_call = train.StaticStep.__call__

        def call(step):
            if not fake.capturing:
                return real_call(step)
            arrays = [a for p in step.model.parameters() for a in (p.data, p.grad)]
            arrays += [v for v in step.optimizer.velocities if v is not None]
            arrays += [step.x, step.labels, step.loss_sum, step.correct]
            saved = [a.copy() for a in arrays]
            real_call(step)
            for array, before in zip(arrays, saved):
                array[...] = before
            fake.captured = step
            fake.log.append(f"captured lr={step.optimizer.lr:.6f}")

        class Graph:
            def __init__(self, step):
                self.step = step

            def launch(self, stream=None):
                fake.log.append("launch")
                real_call(self.step)

        class Stream:
            def __init__(self, non_blocking=False):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def begin_capture(self, mode=None):
                fake.log.append("begin_capture")
                if capture_error is not None:
                    raise capture_error
                fake.capturing = True

            def end_capture(self):
                if not fake.capturing:
                    raise RuntimeError("the stream is not capturing")
                fake.capturing = False
                return Graph(fake.captured)

        class MemoryPool:
            def malloc(self, size):
                raise AssertionError("never called: the arrays are NumPy's")

        @contextlib.contextmanager
        def using_allocator(malloc):
            fake.log.append("private pool")
            yield

        self.module = types.ModuleType("cupy")
        self.module.cuda = types.SimpleNamespace(
            Stream=Stream,
            MemoryPool=MemoryPool,
            using_allocator=using_allocator,
            runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
        )
        for name in ("asarray", "zeros", "take", "concatenate"):
            setattr(self.module, name, getattr(np, name))
        monkeypatch.setattr(train.StaticStep, "__call__", call)
        monkeypatch.setitem(sys.modules, "cupy", self.module)


SMALL_RUN = dict(epochs=3, batch_size=32, seed=3)


def _small(digits):
    return digits[0][:256], digits[1][:256], digits[2], digits[3]


def _assert_same_training(result, expected):
    assert result.correct == expected.correct
    assert [e.loss for e in result.history] == [e.loss for e in expected.history]
    assert [e.train_accuracy for e in result.history] == [e.train_accuracy for e in expected.history]
    for (name, a), b in zip(result.model.state_dict().items(), expected.model.state_dict().values()):
        assert np.array_equal(a, b), name


def test_graph_training_warms_up_once_captures_per_learning_rate_and_replays_every_step(monkeypatch, digits):
    expected = train.fit(train.initial_model("mlp", "tanh", 3), _small(digits), device="cpu", **SMALL_RUN)

    fake = FakeCupy(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = train.fit(train.initial_model("mlp", "tanh", 3), _small(digits), device="cuda", graph=True,
                           **SMALL_RUN)
    assert result.graph is True
    _assert_same_training(result, expected)
    steps = 256 // 32
    lrs = [e.lr for e in expected.history]
    # one eager warm-up step, then per epoch: a capture at that epoch's learning rate, a launch per step
    assert fake.log == (
        ["private pool"]
        + ["private pool", "begin_capture", f"captured lr={lrs[0]:.6f}"] + ["launch"] * (steps - 1)
        + ["private pool", "begin_capture", f"captured lr={lrs[1]:.6f}"] + ["launch"] * steps
        + ["private pool", "begin_capture", f"captured lr={lrs[2]:.6f}"] + ["launch"] * steps
    )


def test_failed_graph_capture_warns_and_trains_eagerly_to_the_same_weights(monkeypatch, digits):
    expected = train.fit(train.initial_model("mlp", "tanh", 3), _small(digits), device="cpu", **SMALL_RUN)

    fake = FakeCupy(monkeypatch, RuntimeError("operation not permitted when stream is capturing"))
    with pytest.warns(RuntimeWarning, match="graph capture failed.*not permitted.*eagerly"):
        result = train.fit(train.initial_model("mlp", "tanh", 3), _small(digits), device="cuda", graph=True,
                           **SMALL_RUN)
    assert fake.log == ["private pool", "private pool", "begin_capture"]  # warm-up, one try, no retries
    assert result.graph is False
    _assert_same_training(result, expected)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_16_bit_copies_on_float32_master_weights(digits, precision):
    """Every step sees 16-bit inputs and parameters (fp16: a loss scaler), training ends on the float32
    master weights, and it learns as the float32 run does."""
    storage = train.PRECISIONS[precision]
    seen = set()

    def on_step(i, step):
        seen.add((step.x.dtype, *(p.dtype for p in step.model.parameters()), step.scaler is not None))

    result = train.fit(train.initial_model("mlp", "relu", 3), _small(digits), device="cpu", precision=precision,
                       on_step=on_step, **SMALL_RUN)
    wide = train.fit(train.initial_model("mlp", "relu", 3), _small(digits), device="cpu", **SMALL_RUN)
    parameters = len(result.model.parameters())
    assert seen == {(storage, *(storage,) * parameters, precision == "fp16")}
    assert all(p.dtype == np.float32 and p.grad.dtype == np.float32 for p in result.model.parameters())
    assert result.history[-1].loss < 0.5 * result.history[0].loss
    assert abs(result.test_accuracy - wide.test_accuracy) < 0.05, (result.test_accuracy, wide.test_accuracy)


def test_fp16_training_skips_steps_whose_gradients_overflow(digits):
    """A scale far too large: every scaled gradient overflows float16, so the scaler halves it and skips
    the step until it fits; the run still learns."""
    x_train, y_train = _small(digits)[:2]
    model_16 = train.initial_model("mlp", "relu", 3)
    for p in model_16.parameters():
        p.data, p.grad = p.data.astype(np.float16), p.grad.astype(np.float16)
    optimizer = optim.SGD(model_16.parameters(), lr=0.1, momentum=0.9)
    scaler = optim.GradScaler(init_scale=2.0**40)
    step = train.StaticStep(model_16, nn.SoftmaxCrossEntropy(), optimizer, (32, *x_train.shape[1:]),
                            dtype=np.float16, scaler=scaler)
    images = x_train.astype(np.float16)

    def epoch():
        step.reset_totals()
        for i in range(8):
            step.load(images, y_train, np.arange(32 * i, 32 * (i + 1)))
            step()
        return float(step.loss_sum) / 8

    first = epoch()
    assert scaler.skipped_steps >= 8 and scaler.get_scale() <= 2.0**32  # every step of it skipped, backing off
    for _ in range(4):
        last = epoch()
    assert scaler.get_scale() <= 2.0**20 and optimizer.masters[0] is not None  # good steps, on the master weights
    assert last < 0.5 * first, (first, last)


# ---------------------------------------------------------------------------
# training on the CPU backend: the README's numbers
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_lenet_reaches_96_percent_on_the_cpu_and_repeats_to_the_last_bit(digits):
    runs = [
        train.fit(train.initial_model(D["model"], D["activation"], D["seed"]), digits, device="cpu")
        for _ in range(2)
    ]
    first, second = runs
    # Where a run lands is chaotic in the kernels' float32 rounding: with gradients that agree to
    # 2e-7, the BLAS-based kernels took seeds 0-11 to 97.2-98.3% and the tiled ones to 96.1-98.3%
    # (seed 0, the default: 97.8% and 96.9%).  96% still fails any real breakage by a wide margin.
    assert first.test_accuracy >= 0.96, [round(e.test_accuracy, 4) for e in first.history]
    assert first.correct == second.correct
    assert [e.loss for e in first.history] == [e.loss for e in second.history]
    for (name, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values()):
        assert np.array_equal(a, b), name
    # the loss falls: the first epoch's mean is well above the last one's
    assert first.history[-1].loss < 0.2 * first.history[0].loss
    assert len(first.history) == D["epochs"] and first.history[0].steps == 1437 // D["batch_size"]


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_lenet_reaches_97_percent_on_the_cpu(digits, precision):
    """The default run on 16-bit storage with float32 master weights (fp16: loss scaling).  Measured
    with the tiled CPU kernels, seed 0: bf16 97.77%, fp16 97.21% (float32: 96.9%).  Deterministic on
    the CPU backend, so this asserts that run, not a lucky draw."""
    result = train.fit(train.initial_model(D["model"], D["activation"], D["seed"]), digits, device="cpu",
                       precision=precision)
    assert result.test_accuracy >= 0.97, [round(e.test_accuracy, 4) for e in result.history]
    assert result.history[-1].test_accuracy >= 0.97  # the 16-bit model's own, before the master copy is put back
    assert result.history[-1].loss < 0.2 * result.history[0].loss


@pytest.mark.slow
def test_cpu_training_does_not_depend_on_the_number_of_threads(tmp_path):
    """numba's parallel loops and BLAS split work by thread; the weights must not change with it."""
    import os
    import subprocess

    weights = []
    for threads in ("1", "2"):
        path = tmp_path / f"threads{threads}.npz"
        env = dict(os.environ, NUMBA_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads)
        result = subprocess.run(
            [sys.executable, "-m", "dlgpu.cli", "train", "--backend", "cpu", "--epochs", "2", "--save", str(path)],
            capture_output=True, text=True, env=env, timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        weights.append(train.read_saved(path)[0])
    for name in weights[0]:
        assert np.array_equal(weights[0][name], weights[1][name]), name


# ---------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------


def test_save_then_load_with_zero_epochs_gives_identical_predictions(tmp_path, capsys, digits):
    path = tmp_path / "mlp.npz"
    status, out = run_cli(capsys, "--backend", "cpu", "--model", "mlp", "--epochs", "2", "--seed", "4",
                          "--save", str(path))
    assert status == 0, out
    assert "epoch   2/2" in out and "time per epoch" in out and "per step" in out
    trained_line = accuracy_line(out)

    status, out = run_cli(capsys, "--backend", "cpu", "--load", str(path), "--epochs", "0")
    assert status == 0, out
    assert "mlp (relu" in out  # the architecture came from the file
    assert accuracy_line(out) == trained_line

    loaded, name, activation = train.load_model(path)
    assert (name, activation) == ("mlp", "relu")
    same = train.fit(train.initial_model("mlp", "relu", 4), digits, device="cpu", epochs=2, seed=4)
    assert np.array_equal(train.predict(loaded, digits[2]), train.predict(same.model, digits[2]))
    assert f"({same.correct}/{same.total})" in trained_line


def test_loading_weights_of_the_wrong_shape_names_the_parameter(tmp_path, capsys):
    path = tmp_path / "bad.npz"
    state = train.initial_model("mlp", "relu", 0).state_dict()
    state["1.weight"] = state["1.weight"][:, :10]
    np.savez(path, **state)
    with pytest.raises(ShapeError, match=r"'1\.weight' has shape \(128, 10\)"):
        train.load_model(path, model_name="mlp")
    status, out = run_cli(capsys, "--backend", "cpu", "--model", "mlp", "--load", str(path), "--epochs", "0")
    assert status == 2 and "1.weight" in out


def test_a_model_option_that_contradicts_the_file_is_refused(tmp_path, capsys):
    path = tmp_path / "mlp.npz"
    train.save_model(train.initial_model("mlp", "tanh", 0), path, model_name="mlp", activation="tanh")
    status, out = run_cli(capsys, "--backend", "cpu", "--model", "lenet", "--load", str(path), "--epochs", "0")
    assert status == 2 and "--model lenet disagrees" in out and "mlp" in out
    status, out = run_cli(capsys, "--backend", "cpu", "--load", str(tmp_path / "missing.npz"), "--epochs", "0")
    assert status == 2 and "no such file" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "-1"], "--epochs: must be >= 0"),
        (["--batch-size", "0"], "--batch-size: must be >= 1"),
        (["--seed", "-5"], "--seed: a seed must be >= 0"),
        (["--lr", "-1"], "--lr: must be > 0"),
        (["--lr", "nan"], "--lr: expected a finite number"),
        (["--weight-decay", "-0.1"], "--weight-decay: must be >= 0"),
        (["--epochs", "2.5"], "--epochs: expected an integer"),
        (["--save", "/no/such/folder/w.npz"], "--save: the folder '/no/such/folder' does not exist"),
        (["--plot", "/no/such/folder/c.png"], "--plot: the folder '/no/such/folder' does not exist"),
    ],
)
def test_bad_arguments_stop_the_command_at_parse_time(capsys, argv, message):
    with pytest.raises(SystemExit) as stopped:
        cli_main(["train", "--backend", "cpu", "--model", "mlp", *argv])
    captured = capsys.readouterr()
    assert stopped.value.code == 2
    assert message in captured.err, captured.err
    assert "training" not in captured.out  # nothing loaded, nothing trained


def test_an_output_path_that_is_a_folder_is_refused(capsys, tmp_path):
    with pytest.raises(SystemExit):
        cli_main(["train", "--backend", "cpu", "--save", str(tmp_path)])
    assert "is a folder, not a file" in capsys.readouterr().err


def test_a_batch_larger_than_the_training_set_exits_with_status_2(capsys):
    status, out = run_cli(capsys, "--backend", "cpu", "--model", "mlp", "--batch-size", "5000")
    assert status == 2 and "batch size 5000 exceeds the 1437 training examples" in out, out


@pytest.mark.skipif(train.gpu_available(), reason="checks the message printed where no GPU is found")
def test_without_a_gpu_the_default_backend_is_the_cpu_and_plot_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "curves.png"
    status, out = run_cli(capsys, "--model", "mlp", "--epochs", "2", "--plot", str(path))
    assert status == 0, out
    assert out.startswith(train.NO_GPU_MESSAGE)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


@pytest.mark.skipif(train.gpu_available(), reason="checks the message printed where no GPU is found")
def test_asking_for_cuda_without_a_gpu_exits_with_status_1(capsys):
    status, out = run_cli(capsys, "--backend", "cuda", "--epochs", "1")
    assert status == 1 and "no GPU found" in out


def test_plot_without_matplotlib_fails_before_training(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    status, out = run_cli(capsys, "--backend", "cpu", "--epochs", "1", "--plot", str(tmp_path / "x.png"))
    assert status == 1 and "matplotlib" in out and "epoch" not in out


def test_the_parser_knows_every_option():
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    args = parser.parse_args(["--no-graph", "--activation", "tanh", "--momentum", "0.5", "--weight-decay", "0"])
    assert args.graph is False and args.activation == "tanh" and args.momentum == 0.5
    defaults = parser.parse_args([])
    # the per-network settings are left None by the parser and resolved once the network is known
    assert defaults.graph is True and defaults.epochs is None and defaults.model is None


# ---------------------------------------------------------------------------
# the GPU: same accuracy band, and the graph replays the eager step
# ---------------------------------------------------------------------------


GPU_ACCURACY_FLOOR = 0.965


@pytest.mark.gpu
@pytest.mark.parametrize("graph", [True, False], ids=["graph", "eager"])
def test_cuda_training_reaches_the_cpu_accuracy_band(digits, graph):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a failed capture is a failure here
        result = train.fit(
            train.initial_model(D["model"], D["activation"], D["seed"]), digits, device="cuda", graph=graph
        )
    assert result.graph is graph
    # The GPU sums in another order, so its run drifts from the CPU's like another seed would;
    # over seeds 0-4 the CPU runs end at 97.5-98.9% (351-356 of 360), hence the band's floor.
    assert result.test_accuracy >= GPU_ACCURACY_FLOOR, [round(e.test_accuracy, 4) for e in result.history]


@pytest.mark.gpu
def test_graph_replay_gives_the_eager_step_loss_and_weights(digits):
    import cupy

    x_train, y_train = cupy.asarray(digits[0]), cupy.asarray(digits[1])
    batch = 128
    order = cupy.asarray(np.random.default_rng(0).permutation(len(digits[0])))
    batches = [order[i * batch : (i + 1) * batch] for i in range(5)]

    def make_step():
        model = train.initial_model("lenet", "relu", 2).to("cuda")
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
        return train.StaticStep(model, nn.SoftmaxCrossEntropy(), opt, (batch, 1, 8, 8), cupy)

    stream = cupy.cuda.Stream(non_blocking=True)
    eager, captured = make_step(), make_step()
    graphed = train.GraphedStep(captured, stream)
    with stream:
        eager_losses, graph_losses = [], []
        for i, idx in enumerate(batches):
            for step, losses in ((eager, eager_losses), (captured, graph_losses)):
                step.reset_totals()
                step.load(x_train, y_train, idx)
            eager()
            if i == 0:
                graphed.warm_up()
                graphed.capture()  # records, does not run
            else:
                graphed()
            stream.synchronize()
            eager_losses.append(float(eager.loss_sum))
            graph_losses.append(float(captured.loss_sum))
            assert int(captured.correct) == int(eager.correct)
    np.testing.assert_allclose(graph_losses, eager_losses, rtol=1e-5)
    for (name, a), b in zip(eager.model.state_dict().items(), captured.model.state_dict().values()):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("module", ["dlgpu.train.data", "dlgpu.train.models"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    failures, tried = doctest.testmod(importlib.import_module(module))
    assert tried > 0 and failures == 0


# ---------------------------------------------------------------------------
# the review's Figure 1: two inputs, two hidden units, one output, squared error
# ---------------------------------------------------------------------------


def test_figure1_curves_are_two_balanced_classes_on_two_parabolas():
    x_train, y_train, x_test, y_test = figure1_curves(n_train=50, n_test=20, seed=2)
    assert x_train.shape == (50, 2) and x_test.shape == (20, 2) and x_train.dtype == np.float32
    assert y_train.dtype == np.int64 and np.bincount(y_train).tolist() == [25, 25]
    for x, y in ((x_train, y_train), (x_test, y_test)):
        np.testing.assert_allclose(x[:, 1], x[:, 0] ** 2 - 0.5 + 0.5 * y, atol=1e-6)
    assert not np.array_equal(x_train[:20], x_test)  # the test points are drawn apart
    again = figure1_curves(n_train=50, n_test=20, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(again, (x_train, y_train, x_test, y_test)))
    with pytest.raises(ArgumentError, match="n_train"):
        figure1_curves(n_train=1)


def test_figure1_net_is_2_2_1_with_a_sigmoid_output_and_trains_every_weight():
    model = models.build("figure1", "tanh", rng=np.random.default_rng(0))
    assert sum(p.data.size for p in model.parameters()) == 9  # 2x2 + 2, 2x1 + 1
    x, labels = figure1_curves(n_train=8, n_test=2)[:2]
    y = model(x)
    assert y.shape == (8, 1) and np.all((y > 0) & (y < 1))
    assert models.hidden(model, x).shape == (8, 2)
    loss_fn = loss_function("squared_error")
    loss = loss_fn(y, labels)
    np.testing.assert_allclose(loss, 0.5 * np.mean((y[:, 0] - labels) ** 2), rtol=1e-6)
    model.zero_grad()
    model.backward(loss_fn.backward())
    assert all(np.any(p.grad != 0) for p in model.parameters())


def test_train_figure1_separates_the_classes_and_plots_the_bent_grid(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    plot, weights = tmp_path / "fig1.png", tmp_path / "fig1.npz"
    status, out = run_cli(capsys, "--backend", "cpu", "--model", "figure1", "--plot", str(plot), "--save", str(weights))
    assert status == 0, out
    # Figure 1's own settings, not the digits' ones
    assert "figure1 (tanh, 9 parameters)" in out and "160 training / 40 test points, 60 epochs of 16 steps of 10" in out
    assert accuracy_line(out) == "test accuracy 100.00% (40/40)"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 20_000
    # the saved net, evaluated again: same accuracy; its plot draws the grid without a loss curve
    plot.unlink()
    status, out = run_cli(capsys, "--backend", "cpu", "--load", str(weights), "--epochs", "0", "--plot", str(plot))
    assert status == 0, out
    assert accuracy_line(out) == "test accuracy 100.00% (40/40)" and plot.is_file()


def test_an_option_given_overrides_the_networks_own_default(capsys):
    status, out = run_cli(capsys, "--backend", "cpu", "--model", "figure1", "--epochs", "2", "--batch-size", "40")
    assert status == 0, out
    assert "2 epochs of 4 steps of 40" in out and "epoch   2/2" in out
