"""from_torch / to_torch round trips, when torch is installed (skipped with a
message otherwise)."""

import numpy as np
import pytest

import recurrent

torch = pytest.importorskip("torch", reason="torch is not installed: the PyTorch interop tests are skipped")


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("head", ["last", "every"])
def test_to_torch_predicts_what_recurrent_predicts(cell, head):
    m = recurrent.Model(cell=cell, input_size=3, hidden_size=5, num_layers=2, bidirectional=True, head=head,
                        out_size=2, dtype="float64", seed=4)
    x = np.random.default_rng(0).normal(size=(4, 6, 3))
    lengths = [6, 2, 5, 1]
    net = m.to_torch()
    with torch.no_grad():
        want = net(torch.from_numpy(x), lengths).numpy()
        full = net(torch.from_numpy(x)).numpy()
    got = m.predict(x, lengths)
    if head == "every":  # recurrent's output past a length is fc(0); compare the valid steps
        for r, l in enumerate(lengths):
            np.testing.assert_allclose(got[r, :l], want[r, :l], rtol=1e-10, atol=1e-12)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m.predict(x), full, rtol=1e-10, atol=1e-12)


def test_from_torch_round_trip_and_embedding_models():
    torch.manual_seed(0)
    rnn, fc, emb = torch.nn.GRU(4, 6, batch_first=True), torch.nn.Linear(6, 7), torch.nn.Embedding(7, 4)
    m = recurrent.from_torch(rnn, fc=fc, emb=emb, head="every", loss="cross_entropy")
    x = np.array([[1, 2, 3, 0], [6, 5, 4, 3]])
    with torch.no_grad():
        want = fc(rnn(emb(torch.from_numpy(x)))[0]).numpy()
    np.testing.assert_allclose(m.predict(x), want, rtol=1e-5, atol=1e-6)
    # A module with .rnn/.fc/.emb (what to_torch returns) comes back with the same weights.
    back = recurrent.from_torch(m.to_torch(), loss="cross_entropy")
    assert back.config == m.config
    assert all(np.array_equal(back.state_dict()[k], v) for k, v in m.state_dict().items())


def test_from_torch_refusals():
    with pytest.raises(ValueError, match="Linear head"):
        recurrent.from_torch(torch.nn.LSTM(2, 3))
    with pytest.raises(TypeError, match="expected nn.RNN"):
        recurrent.from_torch(torch.nn.Linear(2, 3), fc=torch.nn.Linear(3, 1))
    with pytest.raises(ValueError, match="proj_size"):
        recurrent.from_torch(torch.nn.LSTM(2, 4, proj_size=3), fc=torch.nn.Linear(3, 1))
    with pytest.raises(ValueError, match="shape|fc.weight"):
        recurrent.from_torch(torch.nn.GRU(2, 4), fc=torch.nn.Linear(5, 1))
