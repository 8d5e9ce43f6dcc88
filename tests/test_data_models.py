import math

import torch

from latentstates import data
from latentstates.models import OneLayerTransformer


def test_sparse_parity_labels_are_parity_of_first_k_bits():
    s = data.sparse_parity(n_bits=10, k=3, n_train=50, n_test=20, seed=0)
    assert s.x_train.shape == (50, 10) and s.x_test.shape == (20, 10)
    assert set(s.x_train.unique().tolist()) == {-1.0, 1.0}
    bits = (s.x_train[:, :3] < 0).sum(dim=1) % 2  # odd number of -1 → label -1
    assert torch.equal(s.y_train, 1 - 2 * bits.float())


def test_modular_addition_covers_all_pairs_once():
    s = data.modular_addition(7, 0.3, seed=1)
    x = torch.cat([s.x_train, s.x_test])
    y = torch.cat([s.y_train, s.y_test])
    assert len(x) == 49 and len({tuple(r) for r in x.tolist()}) == 49
    assert (x[:, 2] == 7).all()
    assert torch.equal(y, (x[:, 0] + x[:, 1]) % 7)
    assert len(s.x_train) == round(0.3 * 49)
    other = data.modular_addition(7, 0.3, seed=2)
    assert not torch.equal(s.x_train, other.x_train)  # split depends on the seed


def _full_causal_reference(m: OneLayerTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """The textbook one-layer transformer over all positions, read out at the last one."""
    resid = m.W_E[tokens] + m.W_pos[: tokens.shape[1]]
    h = m.ln_attn(resid)
    q = torch.einsum("hed,bpd->bhpe", m.W_Q, h)
    k = torch.einsum("hed,bpd->bhpe", m.W_K, h)
    v = torch.einsum("hed,bpd->bhpe", m.W_V, h)
    scores = torch.einsum("bhqe,bhke->bhqk", q, k) / math.sqrt(m.d_head)
    n = tokens.shape[1]
    scores = scores.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
    z = torch.einsum("bhqk,bhke->bhqe", scores.softmax(-1), v)
    z = z.permute(0, 2, 1, 3).reshape(len(tokens), n, -1)
    resid = resid + z @ m.W_O.T
    mlp = torch.relu(m.ln_mlp(resid) @ m.W_in.T + m.b_in) @ m.W_out.T + m.b_out
    return (m.ln_final(resid + mlp) @ m.W_U)[:, -1]


def test_last_position_transformer_equals_full_causal_model():
    torch.manual_seed(0)
    for ln in (False, True):
        m = OneLayerTransformer(vocab=12, n_out=11, d_model=16, n_heads=4, d_mlp=32, layer_norm=ln).double()
        tokens = data.modular_addition(11, 0.5, seed=0).x_train[:40]
        torch.testing.assert_close(m(tokens), _full_causal_reference(m, tokens))
