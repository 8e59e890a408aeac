"""Every refusal is a Python exception naming the problem, never a crash."""

import numpy as np
import pytest

import recurrent


def lstm(**kw):
    args = dict(cell="lstm", input_size=3, hidden_size=4, out_size=2)
    args.update(kw)
    return recurrent.Model(**args)


X = np.zeros((2, 5, 3), np.float32)
Y = np.zeros((2, 2), np.float32)


@pytest.mark.parametrize("kw,words", [
    (dict(cell="transformer"), "cell"),
    (dict(head="first"), "head"),
    (dict(loss="hinge"), "loss"),
    (dict(dtype="float16"), "dtype"),
    (dict(hidden_size=0), "hidden_size"),
    (dict(input_size=-1), "input_size"),
    (dict(num_layers=0), "num_layers"),
    (dict(out_size=0), "out_size"),
    (dict(dropout=1.5), "dropout"),
    (dict(vocab=0), "vocab"),
    (dict(input_size=2.5), "input_size"),
    (dict(seed=2**70), "seed"),
    (dict(seed=-1), "seed"),
    (dict(hidden_size=True), "hidden_size"),
])
def test_bad_model_settings(kw, words):
    with pytest.raises(ValueError, match=words):
        lstm(**kw)


def test_a_model_too_large_for_memory_is_refused_before_allocation():
    with pytest.raises(MemoryError, match="memory limit"):
        lstm(hidden_size=1 << 20)


@pytest.mark.parametrize("x,words", [
    (np.zeros((2, 5)), "3 dimensions"),
    (np.zeros((2, 5, 4)), "shape mismatch"),
    (np.zeros((0, 5, 3)), "batch"),
    (np.full((2, 5, 3), np.nan), "not finite"),
])
def test_bad_inputs(x, words):
    with pytest.raises(ValueError, match=words):
        lstm().predict(x)


@pytest.mark.parametrize("x", [np.zeros((2, 5, 3), complex), np.array([[["a"] * 3] * 5] * 2), np.zeros((2, 5, 3), bool)])
def test_unsupported_dtypes(x):
    with pytest.raises(TypeError, match="dtype"):
        lstm().predict(x)


def test_ragged_python_lists_are_refused():
    with pytest.raises(ValueError):
        lstm().predict([[[0, 0, 0]], [[0, 0, 0], [1, 1, 1]]])


@pytest.mark.parametrize("lengths,words", [([0, 5], "length"), ([6, 5], "length"), ([5], "lengths"),
                                            ([[5, 5]], "lengths"), ([-1, 5], "lengths"), ([2.5, 5], "whole")])
def test_bad_lengths(lengths, words):
    with pytest.raises(ValueError, match=words):
        lstm().predict(X, lengths=lengths)


def test_bad_state():
    with pytest.raises(ValueError, match="state"):
        lstm().predict(X, state=(np.zeros((1, 3, 4)), np.zeros((1, 3, 4))))
    with pytest.raises(ValueError, match="state"):
        lstm().predict(X, state=(np.zeros((1, 2, 4)),))


def test_bad_tokens():
    m = recurrent.Model(cell="gru", input_size=3, hidden_size=4, vocab=5)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        m.predict(np.array([[1, 5]]))
    with pytest.raises(ValueError, match="negative"):
        m.predict(np.array([[1, -2]]))
    with pytest.raises(ValueError, match="whole numbers"):
        m.predict(np.array([[1.5, 2]]))


def test_bad_targets():
    with pytest.raises(ValueError, match="targets|shape"):
        lstm().loss_and_grad(X, np.zeros((3, 2)))
    ce = lstm(loss="cross_entropy")
    with pytest.raises(ValueError, match="class target"):
        ce.loss_and_grad(X, np.array([0, 2]))


def test_state_dict_errors_leave_the_model_unchanged():
    m = lstm()
    before = m.state_dict()
    bad_shape = dict(before, **{"fc.weight": np.zeros((3, 4))})
    with pytest.raises(ValueError, match="fc.weight"):
        m.load_state_dict(bad_shape)
    missing = {k: v for k, v in before.items() if k != "fc.bias"}
    with pytest.raises(ValueError, match="fc.bias.*missing"):
        m.load_state_dict(missing)
    with pytest.raises(ValueError, match="rnn.weight_ih_l9"):
        m.load_state_dict(dict(before, **{"rnn.weight_ih_l9": np.zeros((16, 3))}))
    nan = dict(before, **{"fc.bias": np.array([np.nan, 0.0])})
    with pytest.raises(ValueError, match="not finite"):
        m.load_state_dict(nan)
    with pytest.raises(TypeError):
        m.load_state_dict([1, 2])
    after = m.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_file_errors(tmp_path):
    with pytest.raises(OSError, match="cannot read"):
        recurrent.Model.load(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(OSError, match="safetensors"):
        recurrent.Model.load(junk)
    with pytest.raises(OSError, match="regular file"):
        recurrent.Model.load(tmp_path)
    with pytest.raises(OSError, match="cannot write"):
        lstm().save(tmp_path / "no" / "such" / "dir" / "m.safetensors")
    with pytest.raises(ValueError, match="dtype"):
        recurrent.Model.load(junk, dtype="int8")


@pytest.mark.parametrize("kw,exc,words", [
    (dict(optimizer="lbfgs"), ValueError, "optimizer"),
    (dict(estimator="magic"), ValueError, "estimator"),
    (dict(lr=0.0), ValueError, "lr"),
    (dict(lr=float("nan")), ValueError, "lr"),
    (dict(weight_decay=-1.0), ValueError, "weight_decay"),
    (dict(epochs=0), ValueError, "epochs"),
    (dict(batch_size=0), ValueError, "batch"),
    (dict(clip_norm=-1.0), ValueError, "clip.norm"),
    (dict(k1=0, estimator="tbptt"), ValueError, "k1"),
    (dict(metric="f1"), ValueError, "metric"),
    (dict(patience=0), ValueError, "patience"),
    (dict(max_steps=0), ValueError, "max_steps"),
    (dict(validation_data=(X,)), ValueError, "validation_data"),
    (dict(validation_data=(X, np.zeros((2, 3)))), ValueError, "shape"),
    (dict(lengths=[3, 5], estimator="rtrl"), ValueError, "equal-length"),
    (dict(epochs=-1), ValueError, "epochs"),
    (dict(threads=10**6), ValueError, "threads"),
])
def test_bad_fit_settings(kw, exc, words):
    args = dict(epochs=1, batch_size=2, verbose=False)
    args.update(kw)
    with pytest.raises(exc, match=words):
        lstm().fit(X, Y, **args)


def test_fit_refusals_of_model_kinds():
    with pytest.raises(ValueError, match="float32"):
        lstm(dtype="float64").fit(X, Y, epochs=1, verbose=False)
    with pytest.raises(ValueError, match="every"):
        lstm(head="every").fit(X, np.zeros((2, 5, 2)), epochs=1, verbose=False)
    with pytest.raises(ValueError, match="shape"):
        lstm().fit(X, np.zeros((3, 2)), epochs=1, verbose=False)
    with pytest.raises(ValueError, match="features"):
        lstm().fit(np.zeros((2, 5, 4)), Y, epochs=1, verbose=False)
    with pytest.raises(ValueError, match="no sequences"):
        lstm().fit(np.zeros((0, 5, 3)), np.zeros((0, 2)), epochs=1, verbose=False)
    with pytest.raises(ValueError, match="no sequences"):
        lstm().fit(X, Y, validation_data=(np.zeros((0, 5, 3)), np.zeros((0, 2))), epochs=1, verbose=False)
    with pytest.raises(ValueError, match="has no step"):
        lstm().fit(np.zeros((2, 0, 3)), Y, epochs=1, verbose=False)
    with pytest.raises(ValueError, match="vocabulary"):
        recurrent.Model(cell="gru", input_size=2, hidden_size=3, vocab=4, out_size=2, loss="cross_entropy").fit(
            np.array([[1, 5]]), np.array([1]), epochs=1, verbose=False)


def test_divergence_is_a_floating_point_error_and_keeps_the_model_finite():
    m = lstm()
    y = np.full((2, 2), 1e30, np.float32)
    with pytest.raises(FloatingPointError, match="diverged"):
        m.fit(X + 1, y, epochs=3, batch_size=2, verbose=False)
    assert all(np.all(np.isfinite(v)) for v in m.state_dict().values())
