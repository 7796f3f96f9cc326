"""Checkpoints: what they hold, resuming exactly, atomic writes, refusing broken files, and
real processes killed with SIGKILL or stopped with Ctrl-C, then resumed."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import chainrule as cr
from chainrule import nn, optim
from chainrule.checkpoint import (
    FILENAME,
    FORMAT,
    Checkpointer,
    TrainingInterrupted,
    load_checkpoint,
    parse_interval,
    restore_optimizer,
    save_checkpoint,
)
from chainrule.errors import ChainruleError, DivergenceError, ModelFileError
from chainrule.io import describe, read_safetensors, write_safetensors
from chainrule.metrics import EpochSums
from chainrule.runs import TrainConfig, find_checkpoint, resume, run


class Crash(Exception):
    """What a callback raises to stand for a crash after a given step."""


class CrashAt:
    def __init__(self, step):
        self.step = step

    def on_step_end(self, state):
        if state.step == self.step:
            raise Crash()


def same_weights(a, b):
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    return pa.keys() == pb.keys() and all(np.array_equal(pa[k].data, pb[k].data) and pa[k].data.dtype == pb[k].data.dtype for k in pa)


def history_without_time(path):
    m = json.loads((path / "metrics.json").read_text())
    return m["history"], m["final"]


# ---- the file -----------------------------------------------------------------------------


@pytest.fixture
def trained(tmp_path):
    """A small model, its Adam state after a few steps, and a checkpoint of them mid-epoch."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 4)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    model = nn.MLP([4, 5, 3], generator=0)
    opt = optim.Adam(model.parameters(), lr=0.01)
    hist = cr.fit(model, "cross_entropy", opt, X, y, epochs=2, batch_size=8, progress=False)
    sums = EpochSums("multiclass", loss_sum=7.25, seen=16, correct=9)
    path = save_checkpoint(
        tmp_path / FILENAME, model, opt, config={"seed": 3}, epoch=2, batch=2, step=12,
        history=hist.epochs, seconds=1.5, epoch_sums=sums, diagnostics={"epochs": [], "warnings": []},
    )
    return model, opt, hist, path


def test_a_checkpoint_holds_weights_optimizer_position_history_and_the_epoch_so_far(trained):
    model, opt, hist, path = trained
    ck = load_checkpoint(path)
    assert same_weights(ck.model, model)
    assert (ck.epoch, ck.batch, ck.step, ck.seconds) == (2, 2, 12, 1.5)
    assert ck.history == json.loads(json.dumps(hist.epochs)) and ck.config == {"seed": 3}
    assert ck.optimizer["type"] == "Adam" and ck.optimizer["steps"] == opt.steps == 10 and ck.optimizer["lr"] == 0.01
    for name in ("m", "v"):
        for saved, live in zip(ck.optimizer["buffers"][name], getattr(opt, name)):
            np.testing.assert_array_equal(saved, live)
    assert ck.epoch_sums.to_dict() == {"task": "multiclass", "loss_sum": 7.25, "seen": 16, "correct": 9}
    assert ck.epoch_sums.result() == {"loss": 7.25 / 16, "accuracy": 9 / 16}
    state = ck.train_state("multiclass")
    assert (state.epoch, state.next_batch, state.step, state.sums, state.history.epochs) == (2, 2, 12, ck.epoch_sums, ck.history)
    arrays, meta = read_safetensors(path)
    assert meta["format"] == FORMAT and "model.0.weight" in arrays and "optimizer.m.0" in arrays
    assert json.loads(meta["architecture"]) == describe(model)  # the same description as a model file
    # the optimizer state goes back into a fresh optimizer of the same kind, and steps the same
    fresh = optim.Adam(ck.model.parameters(), lr=0.5)
    restore_optimizer(fresh, ck)
    assert fresh.lr == 0.01 and fresh.steps == 10
    with pytest.raises(ModelFileError, match="state of a Adam optimizer, not of SGD"):
        restore_optimizer(optim.SGD(ck.model.parameters(), lr=0.1), ck)


@pytest.mark.parametrize(
    "value, expected",
    [(0, (0, "steps")), (500, (500, "steps")), ("500", (500, "steps")), ("2e", (2, "epochs")), ("30s", (30, "seconds")),
     ("5m", (5, "minutes")), ("0e", (0, "steps"))],
)
def test_interval_syntax(value, expected):
    assert parse_interval(value) == expected
    assert TrainConfig(checkpoint_every=value).checkpoint_every == (expected[0] if expected[1] == "steps" else value)


@pytest.mark.parametrize("value", ["x", "-1", "1.5", "e", "", "2h", True, None, "²"])
def test_bad_intervals_are_refused_with_the_syntax(value):
    with pytest.raises(ChainruleError, match=r"checkpoint_every must be a number of steps \(such as 500\), of epochs \(2e\)"):
        TrainConfig(checkpoint_every=value)


# ---- resuming exactly ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "optimizer, every, crash_at",
    [
        ("adam", 20, 100),  # mid-epoch: the epoch's outputs so far are in the checkpoint
        ("sgd", 43, 60),  # at an epoch's last batch, before its end-of-epoch record
        ("adam", "1e", 100),  # at epoch boundaries
        ("sgd", "1s", 110),  # timed: wherever the clock falls (at least once: the crash is after 1 s)
    ],
)
def test_a_crashed_run_resumes_to_the_same_weights_and_history(tmp_path, optimizer, every, crash_at):
    cfg = TrainConfig(dataset="digits", layers=(16,), epochs=3, optimizer=optimizer, checkpoint_every=every, monitor_every=3)
    whole = run(cfg, out=tmp_path / "whole", plots=False)
    assert not (tmp_path / "whole" / FILENAME).exists()  # removed once the run finished

    class Slow:  # makes sure a 1-second timer fires before the crash
        def on_step_end(self, state):
            if every == "1s" and state.step == 50:
                time.sleep(1.05)

    with pytest.raises(Crash):
        run(cfg, out=tmp_path / "cut", plots=False, callbacks=[Slow(), CrashAt(crash_at)])
    ck = load_checkpoint(tmp_path / "cut" / FILENAME)
    assert 0 < ck.step < crash_at and len(ck.history) == ck.epoch
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    again = resume(tmp_path / "cut", plots=False)
    assert again.resumed_from == ck.step
    assert same_weights(again.model, whole.model)
    assert same_weights(cr.load(tmp_path / "cut" / "model.safetensors"), cr.load(tmp_path / "whole" / "model.safetensors"))
    assert history_without_time(tmp_path / "cut") == history_without_time(tmp_path / "whole")
    diagnostics = json.loads((tmp_path / "cut" / "metrics.json").read_text())["diagnostics"]
    assert [r["epoch"] for r in diagnostics["epochs"]] == [1, 2, 3]  # the records from before the crash are kept
    assert not (tmp_path / "cut" / FILENAME).exists()


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_a_crashed_run_with_dropout_and_normalization_resumes_bit_identical(tmp_path, norm):
    """Running statistics are in the checkpoint, and the dropout masks' generator goes on where it stopped."""
    cfg = TrainConfig(dataset="digits", layers=(16, 16, 16), residual=True, norm=norm, dropout=0.2, epochs=2, checkpoint_every=30, monitor_every=5)
    whole = run(cfg, out=tmp_path / "whole", plots=False)
    with pytest.raises(Crash):
        run(cfg, out=tmp_path / "cut", plots=False, callbacks=[CrashAt(50)])
    ck = load_checkpoint(tmp_path / "cut" / FILENAME)
    assert ck.step == 30 and set(ck.info["rng"]["dropout"]) == {"0.3", "1.block.3", "2.block.3"}
    again = resume(tmp_path / "cut", plots=False)
    assert same_weights(again.model, whole.model)
    for (k, a), (k2, b) in zip(again.model.state_dict().items(), whole.model.state_dict().items()):
        assert k == k2 and np.array_equal(a, b)  # buffers too
    assert history_without_time(tmp_path / "cut") == history_without_time(tmp_path / "whole")
    # watching (the monitor's probes run the model) changed neither the weights nor the running statistics
    unwatched = run(TrainConfig(**{**cfg.to_dict(), "monitor_every": 0, "checkpoint_every": 0}), plots=False)
    assert all(np.array_equal(a, b) for a, b in zip(unwatched.model.state_dict().values(), whole.model.state_dict().values()))


def test_the_checkpointer_in_a_plain_fit_loop(tmp_path):
    X, y = cr.data.load_digits()
    X, y = X[:200], y[:200]

    def train(callbacks=(), **resume_from):
        m = nn.MLP([64, 16, 10], generator=1)
        o = optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        if resume_from:
            ck = resume_from.pop("ck")
            m = ck.model
            o = optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
            restore_optimizer(o, ck)
            resume_from = dict(state=ck.train_state("multiclass"))
        h = cr.fit(m, "cross_entropy", o, X, y, epochs=4, batch_size=16, progress=False, callbacks=callbacks, **resume_from)
        return m, h

    whole, whole_hist = train()
    saver = Checkpointer(tmp_path / FILENAME, {"note": "plain fit"}, every=2, unit="epochs", total_epochs=4)
    with pytest.raises(Crash):
        train([saver, CrashAt(40)])  # 13 batches an epoch: the crash is in epoch 4, after the checkpoint of epoch 2
    assert saver.saved_step == 26
    ck = load_checkpoint(tmp_path / FILENAME)
    assert (ck.epoch, ck.batch, ck.step, ck.config, ck.reason) == (2, 0, 26, {"note": "plain fit"}, "epochs")
    again, again_hist = train(ck=ck)
    assert same_weights(again, whole) and again_hist["loss"] == whole_hist["loss"]
    assert again_hist["accuracy"] == whole_hist["accuracy"]


def test_ctrl_c_in_process_stops_after_the_step_with_a_checkpoint(tmp_path):
    cfg = TrainConfig(dataset="xor", layers=(8,), epochs=4, optimizer="sgd")

    class CtrlC:
        def on_step_end(self, state):
            if state.step == 7:
                os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as info:
        run(cfg, out=tmp_path / "r", callbacks=[CtrlC()], interruptible=True, plots=False)
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
    assert info.value.step == 7 and info.value.path == tmp_path / "r" / FILENAME
    ck = load_checkpoint(info.value.path)
    assert ck.step == 7 and ck.reason == "interrupt"
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["final"] is None
    whole = run(cfg, plots=False)
    assert same_weights(resume(tmp_path / "r", plots=False).model, whole.model)


def test_divergence_leaves_the_last_good_checkpoint_and_the_epochs_done(tmp_path):
    # measured: these settings train through epoch 1 and the loss passes a million times the first
    # step's at step 30 (epoch 2, batch 6 of 24)
    cfg = TrainConfig(dataset="sine", layers=(32, 32), activation="tanh", optimizer="sgd", lr=0.34, momentum=0.9,
                      epochs=8, checkpoint_every=10, monitor_every=2)
    with pytest.raises(DivergenceError) as info:
        run(cfg, out=tmp_path, plots=False)
    message = str(info.value)
    assert "the loss reached" in message and "try a smaller one" in message and "\n" not in message
    step = int(message.split(" at step ")[1].split(" ")[0])
    epoch = int(message.split("(epoch ")[1].split(",")[0])
    assert epoch >= 2
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and metrics["epochs_run"] == epoch - 1 == len(metrics["history"])
    assert all(np.isfinite(r["loss"]) for r in metrics["history"])
    kinds = [w["kind"] for w in metrics["diagnostics"]["warnings"]]
    assert "nonfinite_loss" in kinds and info.value.diagnosis
    ck = load_checkpoint(tmp_path / FILENAME)
    assert ck.step == (step - 1) // 10 * 10 and f"last good checkpoint (step {ck.step})" in message
    assert all(np.isfinite(p.data).all() for p in ck.model.parameters())
    assert not (tmp_path / "model.safetensors").exists()


def test_resume_refuses_what_it_cannot_continue(tmp_path):
    with pytest.raises(ChainruleError, match="does not exist"):
        find_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ChainruleError, match="has no checkpoint.safetensors to resume from"):
        resume(tmp_path / "empty")
    run(TrainConfig(dataset="xor", layers=(4,), epochs=1), out=tmp_path / "done", plots=False)
    with pytest.raises(ChainruleError, match="has finished"):
        resume(tmp_path / "done")


def test_a_checkpoint_whose_settings_do_not_fit_is_refused(tmp_path):
    cfg = TrainConfig(dataset="xor", layers=(4,), epochs=2, checkpoint_every=3)
    with pytest.raises(Crash):
        run(cfg, out=tmp_path, plots=False, callbacks=[CrashAt(5)])
    path = tmp_path / FILENAME
    arrays, meta = read_safetensors(path)
    info = json.loads(meta["checkpoint"])
    for change, message in (
        ({"layers": [5]}, "holds a model"),
        ({"activation": "swish"}, "holds settings that are not valid: unknown activation"),
        ({"optimizer": "sgd"}, "holds the state of a Adam optimizer, not of SGD"),
    ):
        write_safetensors(path, arrays, {**meta, "checkpoint": json.dumps({**info, "config": {**info["config"], **change}})})
        with pytest.raises(ModelFileError, match=message):
            resume(tmp_path)


# ---- atomic writes and broken files ----------------------------------------------------------


def test_a_crash_while_writing_leaves_the_previous_checkpoint_whole(trained, monkeypatch):
    model, opt, hist, path = trained
    before = path.read_bytes()

    def crash(*args):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        save_checkpoint(path, model, opt, config={}, epoch=2, batch=0, step=10, history=hist.epochs)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [FILENAME]  # no temporary file left behind
    assert load_checkpoint(path).step == 12


def test_truncated_checkpoints_are_refused(trained):
    _, _, _, path = trained
    raw = path.read_bytes()
    bad = path.with_name("bad.safetensors")
    for cut in range(0, len(raw), max(1, len(raw) // 60)):
        bad.write_bytes(raw[:cut])
        with pytest.raises(ModelFileError, match="bad.safetensors"):
            load_checkpoint(bad)


def test_flipped_bytes_are_refused_or_keep_the_architecture(trained):
    model, _, _, path = trained
    raw = path.read_bytes()
    header = 8 + int.from_bytes(raw[:8], "little")
    bad = path.with_name("bad.safetensors")
    rng = np.random.default_rng(0)
    refused = 0
    # every byte of the header inverted: an ASCII byte becomes one that is not UTF-8
    for offset in list(range(0, header, max(1, header // 150))):
        flipped = bytearray(raw)
        flipped[offset] ^= 0xFF
        bad.write_bytes(bytes(flipped))
        with pytest.raises(ModelFileError):
            load_checkpoint(bad)
    # single bits anywhere: refused, or (a digit in the metadata, a bit of a float) a checkpoint of the same shapes
    for offset in rng.integers(0, len(raw), 300):
        flipped = bytearray(raw)
        flipped[offset] ^= 1 << int(rng.integers(0, 8))
        bad.write_bytes(bytes(flipped))
        try:
            ck = load_checkpoint(bad)
        except ModelFileError:
            refused += 1
            continue
        assert [p.shape for p in ck.model.parameters()] == [p.shape for p in model.parameters()]
        assert all(np.isfinite(p.data).all() for p in ck.model.parameters())
        assert len(ck.history) == ck.epoch
    assert refused > 0


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda a, m, i: (a, {**m, "format": "chainrule/1"}, i), "is not a chainrule checkpoint"),
        (lambda a, m, i: (a, m, {**i, "history": i["history"][:1]}), "position epoch 2 but 1 epochs in its history"),
        (lambda a, m, i: ({**a, "optimizer.m.0": np.zeros((2, 2), np.float32)}, m, i), r"optimizer buffer 'm.0' of shape \(2, 2\)"),
        (lambda a, m, i: ({**a, "optimizer.v.1": np.full(5, np.nan, np.float32)}, m, i), "optimizer buffer 'v.1' with non-finite"),
        (lambda a, m, i: ({**a, "optimizer.q.0": a["optimizer.m.0"]}, m, i), "does not list"),
        (lambda a, m, i: ({**a, "extra": a["optimizer.m.0"]}, m, i), "not part of a checkpoint"),
        (lambda a, m, i: ({**a, "model.0.weight": np.zeros((4, 6), np.float32)}, m, i), r"'0.weight' has shape \(4, 6\)"),
        (lambda a, m, i: ({k: v for k, v in a.items() if k != "model.0.bias"}, m, i), "lacks parameter '0.bias'"),
        (lambda a, m, i: (a, {**m, "architecture": '{"type": "Evil", "config": {}}'}, i), "unknown layer type 'Evil'"),
        (lambda a, m, i: (a, m, {**i, "optimizer": {**i["optimizer"], "lr": -1}}), "bad optimizer lr"),
        (lambda a, m, i: (a, m, {**i, "position": {"epoch": 2, "batch": "x", "step": 1}}), "bad position batch"),
        (lambda a, m, i: (a, m, {**i, "epoch_so_far": {"loss_sum": 1.0, "seen": 3}}), "has bad epoch_so_far: epoch sums must be"),
        (lambda a, m, i: (a, m, {**i, "epoch_so_far": {**i["epoch_so_far"], "correct": -1}}), "epoch sums' correct must be a finite number >= 0"),
        (lambda a, m, i: (a, m, {**i, "config": [1]}), "has no config"),
        (lambda a, m, i: (a, {k: v for k, v in m.items() if k != "checkpoint"}, i), "metadata field checkpoint is not valid JSON"),
    ],
)
def test_checkpoints_that_do_not_fit_are_refused_by_name(trained, edit, message):
    _, _, _, path = trained
    arrays, meta = read_safetensors(path)
    info = json.loads(meta["checkpoint"])
    arrays, meta, info = edit(arrays, meta, info)
    if "checkpoint" in meta:
        meta = {**meta, "checkpoint": json.dumps(info)}
    write_safetensors(path, arrays, meta)
    with pytest.raises(ModelFileError, match=message) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)


# ---- real processes: SIGKILL and Ctrl-C --------------------------------------------------------

# Long enough that a kill lands mid-run: 20 epochs of 43 steps, a checkpoint every 25 steps
# (measured: about 1.1 s of training after the first checkpoint, on a busy 2-core machine).
PROCESS_RUN = ["train", "--layers", "64,64", "--epochs", "20", "--checkpoint-every", "25", "--monitor-every", "5", "--no-plots", "--quiet"]
TOTAL_STEPS = 20 * 43


def start(out):
    return subprocess.Popen(
        [sys.executable, "-m", "chainrule", *PROCESS_RUN, "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for_checkpoint(process, out, min_step=1, timeout=120):
    """Wait until the run folder has a checkpoint (at least at ``min_step``) while the process still trains."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run finished before it could be stopped: " + process.communicate()[1]
        if (out / FILENAME).exists():
            try:
                if load_checkpoint(out / FILENAME).step >= min_step:
                    return
            except ModelFileError:
                pass  # never: the file is renamed into place whole (asserted by the tests below)
        time.sleep(0.005)
    process.kill()
    raise AssertionError("no checkpoint appeared")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("procs") / "whole"
    p = subprocess.run([sys.executable, "-m", "chainrule", *PROCESS_RUN, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return out


def assert_same_run(a, b):
    wa, _ = read_safetensors(a / "model.safetensors")
    wb, _ = read_safetensors(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert wa[k].dtype == wb[k].dtype and wa[k].tobytes() == wb[k].tobytes(), k  # bit for bit
    assert history_without_time(a) == history_without_time(b)


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_to_bitwise_identical_weights(uninterrupted, tmp_path):
    out = tmp_path / "killed"
    p = start(out)
    wait_for_checkpoint(p, out, min_step=25)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL
    ck = load_checkpoint(out / FILENAME)  # whole, whatever the moment of the kill
    assert 25 <= ck.step < TOTAL_STEPS and not (out / "model.safetensors").exists()
    r = subprocess.run([sys.executable, "-m", "chainrule", "train", "--resume", str(out), "--json", "--no-plots"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    printed = json.loads(r.stdout)
    assert printed["resumed_from_step"] >= ck.step and printed["out"] == str(out)
    assert_same_run(out, uninterrupted)
    assert not (out / FILENAME).exists()


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_says_how_to_resume_and_resumes_exactly(uninterrupted, tmp_path):
    out = tmp_path / "stopped"
    p = start(out)
    wait_for_checkpoint(p, out)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert f"resume with: chainrule train --resume {out}" in stderr
    ck = load_checkpoint(out / FILENAME)
    assert ck.reason == "interrupt" and 0 < ck.step < TOTAL_STEPS
    assert f"stopped after step {ck.step} (epoch {ck.epoch + 1})" in stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["epochs_run"] == ck.epoch
    r = subprocess.run([sys.executable, "-m", "chainrule", "train", "--resume", str(out), "--quiet", "--no-plots"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out)
    assert_same_run(out, uninterrupted)


def test_a_flipped_byte_in_any_checkpoint_tensor_is_refused_by_name(trained):
    from chainrule.io import read_header

    _, _, _, path = trained
    raw = path.read_bytes()
    file = read_header(path)
    assert {"model.0.weight", "optimizer.m.0", "optimizer.v.0"} <= set(file.tensors)  # (the epoch so far is sums, in the JSON)
    for name, t in file.tensors.items():
        flipped = bytearray(raw)
        flipped[file.data_start + (t.start + t.end) // 2] ^= 0x01
        path.write_bytes(bytes(flipped))
        with pytest.raises(ModelFileError, match=f"tensor '{name}' does not match its SHA-256 digest"):
            load_checkpoint(path)
