"""OnlineLearner (an unbounded stream, one step at a time) and pad_sequences."""

import numpy as np
import pytest

import recurrent


def sine_stream(learner, steps):
    losses = []
    for t in range(steps):
        losses.append(learner.step([[np.sin(0.3 * t)]], [[np.sin(0.3 * (t + 1))]]))
    return losses


@pytest.mark.parametrize("estimator", ["rtrl", "uoro", "snap1", "snap2"])
def test_online_learning_lowers_the_loss(estimator):
    m = recurrent.Model(cell="gru", input_size=1, hidden_size=8, seed=0)
    learner = recurrent.OnlineLearner(m, estimator=estimator, lr=1e-2, seed=1)
    assert learner.running_loss is None and learner.estimator_bytes > 0
    losses = sine_stream(learner, 1500)  # UORO's noisy estimate needs more than 600 steps
    assert learner.steps == 1500 and learner.updates == 1500
    assert np.mean(losses[-100:]) < 0.5 * np.mean(losses[:100]), (np.mean(losses[:100]), np.mean(losses[-100:]))
    # The model given was copied, the learned one is returned.
    learned = learner.model
    assert not np.array_equal(learned.state_dict()["fc.weight"], m.state_dict()["fc.weight"])


def test_online_is_deterministic_and_k_batches_updates():
    def run(k):
        learner = recurrent.OnlineLearner(recurrent.Model(cell="lstm", input_size=1, hidden_size=4), k=k, lr=1e-2)
        return sine_stream(learner, 50), learner

    a, la = run(1)
    b, _ = run(1)
    assert a == b
    _, lk = run(5)
    assert lk.updates == 10
    # No target: the state advances, no loss, no update.
    assert la.step([[0.5]]) is None and la.steps == 51


def test_online_classes_and_float64():
    m = recurrent.Model(cell="rnn_tanh", input_size=2, hidden_size=4, out_size=3, loss="cross_entropy",
                        dtype="float64")
    learner = recurrent.OnlineLearner(m, estimator="rtrl", batch=2)
    loss = learner.step(np.zeros((2, 2)), [0, 2])
    assert isinstance(loss, float) and learner.model.dtype == "float64"


@pytest.mark.parametrize("kw,words", [
    (dict(estimator="bptt"), "fit"),
    (dict(estimator="foo"), "estimator"),
    (dict(optimizer="lbfgs"), "optimizer"),
    (dict(lr=0.0), "lr"),
    (dict(k=0), "k"),
    (dict(batch=0), "batch"),
    (dict(clip_norm=-1.0), "clip_norm"),
])
def test_online_bad_settings(kw, words):
    with pytest.raises(ValueError, match=words):
        recurrent.OnlineLearner(recurrent.Model(cell="gru", input_size=1, hidden_size=4), **kw)


def test_online_bad_steps():
    learner = recurrent.OnlineLearner(recurrent.Model(cell="gru", input_size=2, hidden_size=4), batch=2)
    with pytest.raises(ValueError, match="x"):
        learner.step(np.zeros((3, 2)))
    with pytest.raises(ValueError):
        learner.step(np.zeros((2, 2)), np.zeros((3, 1)))
    with pytest.raises(TypeError):
        recurrent.OnlineLearner("not a model")
    tokens = recurrent.Model(cell="gru", input_size=2, hidden_size=4, vocab=5)
    with pytest.raises(ValueError):
        recurrent.OnlineLearner(tokens)


def test_pad_sequences():
    x, lengths = recurrent.pad_sequences([np.ones((3, 2)), np.ones((1, 2)) * 2, np.ones((5, 2)) * 3])
    assert x.shape == (3, 5, 2) and lengths.tolist() == [3, 1, 5]
    assert x[0, 3:].sum() == 0 and x[1, 0, 0] == 2 and x[2, 4, 1] == 3
    m = recurrent.Model(cell="gru", input_size=2, hidden_size=4)
    assert np.allclose(m.predict(x, lengths)[1], m.predict(np.full((1, 1, 2), 2.0))[0], atol=1e-6)
    toks, tl = recurrent.pad_sequences([[1, 2, 3], [4]], value=-1)
    assert toks.tolist() == [[1, 2, 3], [4, -1, -1]] and toks.dtype.kind == "i" and tl.tolist() == [3, 1]
    with pytest.raises(ValueError, match="same I"):
        recurrent.pad_sequences([np.ones((3, 2)), np.ones((3, 4))])
    with pytest.raises(ValueError, match="empty"):
        recurrent.pad_sequences([np.ones((0, 2)), np.ones((3, 2))])
    with pytest.raises(ValueError, match="no sequences"):
        recurrent.pad_sequences([])
