"""Models from Python: construction, predict, state_dict, save/load, fit."""

import numpy as np
import pytest

import recurrent


def mean_task(n, t=8, i=2, seed=0):
    """y = the mean of the first feature over the steps (a real regression)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, t, i)).astype(np.float32)
    y = x[:, :, :1].mean(axis=1)
    return x, y


def test_repr_config_and_num_params():
    m = recurrent.Model(cell="gru", input_size=3, hidden_size=4, num_layers=2, bidirectional=True, out_size=2)
    # GRU: per layer and direction 3H x in + 3H x H + 2 x 3H; layer 2 reads 2H; head 2 x 2H + 2.
    h = 4
    layer = lambda i: 3 * h * i + 3 * h * h + 6 * h
    assert m.num_params == 2 * layer(3) + 2 * layer(2 * h) + 2 * 2 * h + 2
    r = repr(m)
    assert "cell='gru'" in r and "num_layers=2" in r and "bidirectional=True" in r and str(m.num_params) in r
    assert m.config["rnn"]["hidden_size"] == 4
    assert list(m.state_dict()) == [
        "rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0",
        "rnn.weight_ih_l0_reverse", "rnn.weight_hh_l0_reverse", "rnn.bias_ih_l0_reverse", "rnn.bias_hh_l0_reverse",
        "rnn.weight_ih_l1", "rnn.weight_hh_l1", "rnn.bias_ih_l1", "rnn.bias_hh_l1",
        "rnn.weight_ih_l1_reverse", "rnn.weight_hh_l1_reverse", "rnn.bias_ih_l1_reverse", "rnn.bias_hh_l1_reverse",
        "fc.weight", "fc.bias"]


def test_init_is_deterministic_from_seed_and_pytorch_bounded():
    a = recurrent.Model(cell="lstm", input_size=2, hidden_size=16, seed=3).state_dict()
    b = recurrent.Model(cell="lstm", input_size=2, hidden_size=16, seed=3).state_dict()
    c = recurrent.Model(cell="lstm", input_size=2, hidden_size=16, seed=4).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["rnn.weight_hh_l0"], c["rnn.weight_hh_l0"])
    assert np.abs(a["rnn.weight_hh_l0"]).max() <= 1 / 4  # U(-1/sqrt(H), 1/sqrt(H))
    fb = recurrent.Model(cell="lstm", input_size=2, hidden_size=16, forget_bias=1.0).state_dict()
    assert np.all(fb["rnn.bias_ih_l0"][16:32] == 1.0) and np.all(fb["rnn.bias_hh_l0"][16:32] == 0.0)


def test_predict_shapes_lengths_state_and_dtypes():
    m = recurrent.Model(cell="lstm", input_size=3, hidden_size=5, num_layers=2, out_size=2)
    x = np.random.default_rng(0).normal(size=(4, 6, 3))
    y = m.predict(x)
    assert y.shape == (4, 2) and y.dtype == np.float32
    y2, (h, c) = m.predict(x, return_state=True)
    assert np.array_equal(y, y2) and h.shape == (2, 4, 5) and c.shape == (2, 4, 5)
    # A sequence's output depends only on its valid steps: padding is ignored.
    lengths = [6, 3, 1, 4]
    xp = x.copy()
    xp[1, 3:] = 99.0
    assert np.allclose(m.predict(x, lengths), m.predict(xp, lengths))
    assert np.allclose(m.predict(x[1:2, :3]), m.predict(x, lengths)[1:2], atol=1e-6)
    # Continuing from a returned state equals one call over the whole sequence.
    _, s = m.predict(x[:, :3], return_state=True)
    assert np.allclose(m.predict(x[:, 3:], state=s), m.predict(x), atol=1e-6)
    # Any dtype and memory order: a Fortran-ordered int array and a float64 view give the same result.
    xi = np.asfortranarray(np.arange(4 * 6 * 3).reshape(4, 6, 3) % 5)
    assert np.array_equal(m.predict(xi), m.predict(xi.astype(np.float32)))
    assert np.array_equal(m.predict(x[:, ::-1]), m.predict(np.ascontiguousarray(x[:, ::-1], dtype=np.float32)))
    every = recurrent.Model(cell="gru", input_size=3, hidden_size=5, head="every", out_size=7)
    assert every.predict(x).shape == (4, 6, 7)
    m64 = m.astype("float64")
    assert m64.dtype == "float64" and m64.predict(x).dtype == np.float64
    assert np.allclose(m64.predict(x), m.predict(x), atol=1e-5)


def test_token_model():
    m = recurrent.Model(cell="gru", input_size=4, hidden_size=6, vocab=10, head="every", out_size=10,
                        loss="cross_entropy")
    x = np.array([[1, 2, 3], [9, 0, 0]])
    assert m.predict(x, lengths=[3, 1]).shape == (2, 3, 10)
    loss, g = m.loss_and_grad(x, np.array([[2, 3, 4], [0, -100, -100]]), lengths=[3, 1])
    assert np.isfinite(loss) and g["emb.weight"].shape == (10, 4)
    # Unused tokens get no gradient.
    assert np.all(g["emb.weight"][5] == 0) and np.any(g["emb.weight"][1] != 0)


def test_loss_and_grad_matches_finite_differences_in_float64():
    m = recurrent.Model(cell="lstm", input_size=2, hidden_size=3, out_size=1, dtype="float64", seed=5)
    x, y = mean_task(3, t=4)
    loss, g = m.loss_and_grad(x, y, lengths=[4, 2, 3])
    sd = m.state_dict()
    for name, idx in [("rnn.weight_hh_l0", (5, 1)), ("rnn.bias_ih_l0", (7,)), ("fc.weight", (0, 2))]:
        eps = 1e-6
        d = {k: v.copy() for k, v in sd.items()}
        d[name][idx] += eps
        m.load_state_dict(d)
        up, _ = m.loss_and_grad(x, y, lengths=[4, 2, 3])
        d[name][idx] -= 2 * eps
        m.load_state_dict(d)
        down, _ = m.loss_and_grad(x, y, lengths=[4, 2, 3])
        m.load_state_dict(sd)
        assert abs((up - down) / (2 * eps) - g[name][idx]) < 1e-7 * max(1.0, abs(g[name][idx]))


def test_state_dict_round_trip_and_save_load(tmp_path):
    m = recurrent.Model(cell="gru", input_size=2, hidden_size=8, out_size=1, seed=1)
    n = recurrent.Model(cell="gru", input_size=2, hidden_size=8, out_size=1, seed=2)
    x, _ = mean_task(5)
    assert not np.array_equal(m.predict(x), n.predict(x))
    n.load_state_dict(m.state_dict())
    assert np.array_equal(m.predict(x), n.predict(x))
    # state_dict returns copies.
    sd = m.state_dict()
    sd["fc.bias"][:] = 100
    assert m.state_dict()["fc.bias"][0] != 100
    path = tmp_path / "m.safetensors"
    m.save(path)
    back = recurrent.Model.load(path)
    assert np.array_equal(back.predict(x), m.predict(x))
    assert back.config == m.config and back.task == {"task": "python"}
    back64 = recurrent.Model.load(str(path), dtype="float64")
    assert back64.dtype == "float64" and np.allclose(back64.predict(x), m.predict(x), atol=1e-6)


def test_fit_lowers_the_loss_below_the_baseline_and_is_deterministic():
    x, y = mean_task(256, seed=1)
    vx, vy = mean_task(64, seed=2)
    baseline = float(((vy - y.mean()) ** 2).mean())  # predicting the training mean

    def run():
        m = recurrent.Model(cell="gru", input_size=2, hidden_size=16, out_size=1, seed=0)
        h = m.fit(x, y, validation_data=(vx, vy), epochs=12, batch_size=16, lr=1e-2, seed=7, threads=1,
                  verbose=False)
        return m, h

    m, h = run()
    assert h["epoch"] == list(range(1, 13)) and h["metric"] == "mse" and h["step"][-1] == 12 * 16
    assert h["val_mse"][-1] < 0.2 * baseline, (h["val_mse"], baseline)
    assert float(((m.predict(vx) - vy) ** 2).mean()) == pytest.approx(h["val_mse"][-1], rel=1e-4)
    m2, h2 = run()
    assert h2 == h and np.array_equal(m2.predict(vx), m.predict(vx))


@pytest.mark.parametrize("estimator", ["tbptt", "rtrl", "uoro", "snap1"])
def test_fit_with_other_estimators_classification_and_lengths(estimator):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(96, 6, 2)).astype(np.float32)
    # the online estimators need equal lengths in a batch (a clear ValueError otherwise, see test_errors)
    lengths = rng.integers(2, 7, size=96) if estimator == "tbptt" else np.full(96, 6)
    # class: whether the sum of the first feature over the valid steps is positive
    s = np.array([x[r, : lengths[r], 0].sum() for r in range(96)])
    y = (s > 0).astype(np.int64)
    m = recurrent.Model(cell="gru", input_size=2, hidden_size=8, out_size=2, loss="cross_entropy")
    h = m.fit(x, y, lengths=lengths, epochs=8, batch_size=16, lr=2e-2, estimator=estimator, k1=3, k2=3,
              verbose=False, threads=1)
    assert h["metric"] == "accuracy" and len(h["val_accuracy"]) == 8
    assert h["val_loss"][-1] < h["val_loss"][0]


def test_fit_verbose_prints_a_line_per_epoch(capsys):
    x, y = mean_task(32)
    m = recurrent.Model(cell="rnn_tanh", input_size=2, hidden_size=4)
    m.fit(x, y, epochs=2, batch_size=8, verbose=True)
    out = capsys.readouterr().out.splitlines()
    assert [l.split()[:2] for l in out if l.startswith("epoch")] == [["epoch", "1"], ["epoch", "2"]]


def test_keep_best_and_patience():
    x, y = mean_task(64)
    m = recurrent.Model(cell="gru", input_size=2, hidden_size=8)
    h = m.fit(x, y, epochs=50, batch_size=8, lr=1.0, optimizer="sgd", patience=2, keep_best=True, verbose=False)
    assert len(h["epoch"]) < 50  # early stop (an lr this large does not keep improving)
    best = min(h["val_loss"])
    assert h["val_loss"][-1] > best  # the last epoch was not the best: keep_best went back
    assert float(((m.predict(x) - y) ** 2).mean()) == pytest.approx(best, rel=1e-4)
