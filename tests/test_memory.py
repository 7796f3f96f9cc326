"""The memory estimate that every tool checks before it builds a run (chainrule.memory)."""

import tracemalloc

import numpy as np
import pytest

import chainrule as cr
from chainrule import nn, optim
from chainrule.errors import ChainruleError
from chainrule.memory import check_training_memory, estimate_training_memory, format_bytes


def test_the_estimate_counts_weights_gradients_optimizer_state_and_activations():
    e = estimate_training_memory([64, 256, 10], batch_size=32, optimizer="adam", rows=1000)
    params = 64 * 256 + 256 + 256 * 10 + 10
    assert e.parameters == params
    assert e.state == 4 * params * (2 + 2)  # weights, gradients, Adam's m and v
    assert estimate_training_memory([64, 256, 10], 32, "sgd").state == 4 * params * 3
    assert e.activations == 4 * 32 * (256 + 10) * 4
    assert e.data == 4 * 1000 * 64
    assert e.recording == 4 * params * 8  # Adam's temporaries, held while cr.compile records
    assert e.total == e.state + e.saving + e.activations + e.evaluation + e.data + e.recording


def test_the_estimate_is_above_the_memory_training_really_takes():
    rng = np.random.default_rng(0)
    X = rng.random((512, 64), dtype=np.float32)
    y = rng.integers(0, 10, 512)
    sizes, batch = [64, 512, 512, 10], 64
    tracemalloc.start()
    try:
        model = nn.MLP(sizes, generator=0)
        opt = optim.Adam(model.parameters(), lr=1e-3)
        cr.fit(model, "cross_entropy", opt, X, y, epochs=1, batch_size=batch, progress=False, validation=(X, y))
        cr.save(model, _tmp_file())  # a model file is written whole in memory first
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    estimate = estimate_training_memory(sizes, batch, "adam", rows=512).total
    # measured: 16.8 MiB traced at the peak (cr.fit compiles: the recording holds Adam's
    # temporaries), 25.8 MiB estimated (6.7 MiB traced when steps ran eagerly)
    assert peak < estimate, (format_bytes(peak), format_bytes(estimate))
    assert estimate < 4 * peak  # and not wildly above it


def _tmp_file():
    import tempfile

    return tempfile.NamedTemporaryFile(suffix=".safetensors", delete=False).name


def test_a_run_that_cannot_fit_is_refused_with_the_estimate():
    e = estimate_training_memory([64, 10**8, 10], 32)
    with pytest.raises(ChainruleError) as info:
        check_training_memory(e, "this run", available=2**30)
    message = str(info.value)
    assert message.startswith("this run needs about ") and "7,500,000,010 parameters" in message
    assert "but 1.0 GiB of memory is available" in message and "\n" not in message
    assert check_training_memory(estimate_training_memory([64, 32, 10], 32), available=2**30).parameters == 2410


def test_the_estimators_refuse_a_network_too_large_for_memory():
    from chainrule.sklearn import MLPClassifier

    X = np.random.default_rng(0).random((20, 64))
    y = np.arange(20) % 3
    with pytest.raises(ChainruleError, match=r"MLPClassifier\(hidden_layer_sizes=\(200000000,\)\) needs about .* of memory is available"):
        MLPClassifier(hidden_layer_sizes=(200_000_000,)).fit(X, y)
