import copy
import math

import pytest
import torch

from latentstates.tasks import data
from latentstates.tasks.models import OneLayerTransformer
from latentstates.tasks.registry import get_task


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
    assert len(s.x_train) == 14  # floor(0.3 * 49), as the released int(len * 0.3)
    other = data.modular_addition(7, 0.3, seed=2)
    assert not torch.equal(s.x_train, other.x_train)  # split depends on the seed


def test_digits_are_the_bundled_images_split_by_seed():
    from sklearn.datasets import load_digits

    s = data.digits(0.8, seed=3)
    assert s.x_train.shape == (1437, 64) and s.x_test.shape == (360, 64)  # floor(0.8 * 1797)
    assert s.x_train.dtype == torch.float32 and 0 <= s.x_train.min() and s.x_train.max() == 1
    # Every image once, with its own label: the split is a permutation of the bundled set.
    x, y = load_digits(return_X_y=True)
    ours = torch.cat([s.x_train, s.x_test]) * 16
    labels = torch.cat([s.y_train, s.y_test])
    index = {tuple(r): int(t) for r, t in zip(x.astype(int).tolist(), y.tolist())}
    assert all(index[tuple(r)] == int(t) for r, t in zip(ours.round().int().tolist(), labels.tolist()))
    assert torch.equal(s.x_train, data.digits(0.8, seed=3).x_train)
    assert not torch.equal(s.x_train, data.digits(0.8, seed=4).x_train)


def test_digits_mlp_shape_and_one_step():
    kind = get_task("digits_mlp")
    s = kind.make_data({"train_fraction": 0.5}, 0)
    model = kind.make_model({"hidden": [16, 8]}, {})
    assert [tuple(w.shape) for w in kind.matrices(model)] == [(16, 64), (8, 16), (10, 8)]
    assert all((b == 0).all() for b in kind.biases(model))  # zero biases, as released
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    before = kind.loss(model(s.x_train), s.y_train)
    for _ in range(5):
        opt.zero_grad()
        kind.loss(model(s.x_train), s.y_train).backward()
        opt.step()
    assert kind.loss(model(s.x_train), s.y_train) < before


def _released_reference(m: OneLayerTransformer, tokens: torch.Tensor, use_ln: bool) -> torch.Tensor:
    """The released model's forward pass (modeling-training src/model.py) over all positions.

    Causal attention by tril masking, LayerNorm after each residual addition (post-LN), no
    final LayerNorm; read out at the last position.
    """
    x = m.W_E[tokens] + m.W_pos[: tokens.shape[1]]
    w_k, w_q, w_v = m.W_K, m.W_Q, m.W_V  # (heads, d_head, d_model)
    k = torch.einsum("ihd,bpd->biph", w_k, x)
    q = torch.einsum("ihd,bpd->biph", w_q, x)
    v = torch.einsum("ihd,bpd->biph", w_v, x)
    scores = torch.einsum("biph,biqh->biqp", k, q)
    n = tokens.shape[1]
    mask = torch.tril(torch.ones(n, n, dtype=x.dtype))
    scores = torch.tril(scores) - 1e10 * (1 - mask)
    attn = torch.softmax(scores / math.sqrt(m.d_head), dim=-1)
    z = torch.einsum("biph,biqp->biqh", v, attn)
    z = z.permute(0, 2, 1, 3).reshape(len(tokens), n, -1)
    x = x + torch.einsum("df,bqf->bqd", m.W_O, z)
    if use_ln:
        x = m.ln_attn(x)
    h = torch.relu(torch.einsum("md,bpd->bpm", m.W_in, x) + m.b_in)
    x = x + torch.einsum("dm,bpm->bpd", m.W_out, h) + m.b_out
    if use_ln:
        x = m.ln_mlp(x)
    return (x @ m.W_U)[:, -1]


def test_last_position_transformer_equals_released_model():
    torch.manual_seed(0)
    for ln in (False, True):
        m = OneLayerTransformer(vocab=12, n_out=12, d_model=16, n_heads=4, d_mlp=32, layer_norm=ln).double()
        if ln:  # non-trivial LayerNorm parameters, so that their placement matters
            for p in (m.ln_attn.weight, m.ln_attn.bias, m.ln_mlp.weight, m.ln_mlp.bias):
                p.data.normal_()
        tokens = data.modular_addition(11, 0.5, seed=0).x_train[:40]
        # 40 examples (vocabulary 12): keys, values and queries from per-token tables; 8: per example.
        for batch in (tokens, tokens[:8]):
            ours, released = m(batch), _released_reference(m, batch, ln)
            torch.testing.assert_close(ours, released)
            weights = torch.randn_like(ours)
            grads = torch.autograd.grad((ours * weights).sum(), list(m.parameters()))
            expected = torch.autograd.grad((released * weights).sum(), list(m.parameters()))
            for g, e in zip(grads, expected):
                torch.testing.assert_close(g, e)


def test_layer_norm_variant_structure_and_one_step():
    """Post-LN as released: two LayerNorms, none final; bias statistics use b_in and b_out only."""
    task = get_task("modular_addition")
    d = {"modulus": 11, "train_fraction": 0.5}
    torch.manual_seed(0)
    m = task.make_model({"d_model": 16, "n_heads": 2, "d_mlp": 32, "layer_norm": True}, d)
    norms = [name for name, mod in m.named_modules() if isinstance(mod, torch.nn.LayerNorm)]
    assert norms == ["ln_attn", "ln_mlp"]
    assert m.W_U.shape == (16, 12)  # p + 1 outputs, "=" included, as the released unembedding
    biases = task.biases(m)
    assert [b.shape for b in biases] == [(32,), (16,)]
    assert biases[0] is m.b_in and biases[1] is m.b_out
    split = task.make_data(d, 0)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    before = task.loss(m(split.x_train), split.y_train)
    before.backward()
    assert m.ln_attn.weight.grad is not None and m.ln_mlp.bias.grad is not None
    opt.step()
    after = task.loss(m(split.x_train), split.y_train)
    assert torch.isfinite(after) and after < before


def test_resnet18_switches_batch_norm_and_residuals_as_released():
    from torch import nn

    from latentstates.tasks.models import ResNet18

    for batch_norm in (True, False):
        for residual in (True, False):
            torch.manual_seed(0)
            model = ResNet18(n_classes=100, batch_norm=batch_norm, residual=residual)
            bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
            # The stem's BatchNorm and the 3 downsample paths' stay; each of 8 blocks has 2 more.
            assert len(bns) == 1 + 3 + (16 if batch_norm else 0)
            assert all(b.residual == residual for b in model.blocks)
            assert sum(b.downsample is not None for b in model.blocks) == 3
            assert isinstance(model.conv1, nn.Conv2d) and model.conv1.stride == (1, 1)
            assert model.conv1.kernel_size == (3, 3)
            assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
            kernels = model.kernels()
            assert len(kernels) == 17 and all(k.ndim == 4 for k in kernels)
            x = torch.randn(4, 3, 32, 32)
            y = torch.tensor([0, 1, 2, 3])
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()  # one training step runs and changes the weights
            assert model(x).shape == (4, 100) and torch.isfinite(loss)
    # Without residuals, a block's output does not depend on its shortcut.
    block = ResNet18(batch_norm=False, residual=False).blocks[0]
    x = torch.randn(1, 64, 8, 8)
    assert torch.equal(block(x), torch.relu(block.conv2(torch.relu(block.conv1(x)))))


@pytest.mark.parametrize("name", ["sparse_parity", "digits_mlp", "mnist_mlp"])
def test_closed_form_loss_gradient_equals_autograd(name):
    kind = get_task(name)
    gen = torch.Generator().manual_seed(0)
    n_out = 1 if name == "sparse_parity" else 10
    out = torch.randn(3, 17, n_out, generator=gen, dtype=torch.float64)  # (replicas, batch, outputs)
    if name == "sparse_parity":
        y = torch.randint(0, 2, (3, 17), generator=gen).double() * 2 - 1
        out[0, :4, 0] = y[0, :4]  # on the hinge's kink (1 - y·out = 0): autograd passes the gradient
    else:
        y = torch.randint(0, 10, (3, 17), generator=gen)
    out.requires_grad_(True)
    sum(kind.loss(out[i], y[i]) for i in range(3)).backward()
    assert torch.allclose(kind.loss_grad(out.detach(), y), out.grad, rtol=0, atol=1e-15)
    assert torch.isnan(kind.loss(torch.full_like(out[0], float("nan")), y[0]))  # divergence shows
    # The stacked loss, each replica's in one call, and the counts of correct outputs (no vmap).
    from latentstates.runs.runtime import correct_counts
    from latentstates.tasks.replicas import Replicas

    alone = torch.stack([kind.loss(out[i], y[i]) for i in range(3)])
    assert torch.allclose(kind.stacked_loss(out.detach(), y), alone.detach(), rtol=0, atol=1e-15)
    replicas = Replicas([torch.nn.Linear(1, 1) for _ in range(3)])
    counts = [kind.correct(out[i], y[i]).sum().item() for i in range(3)]
    assert correct_counts(replicas, kind, out.detach(), y).tolist() == counts


def _mlps(name: str, n: int) -> tuple[list[torch.nn.Module], torch.Tensor, torch.Tensor]:
    kind, gen = get_task(name), torch.Generator().manual_seed(1)
    if name == "sparse_parity":
        sizes, x = {"n_bits": 12}, torch.randint(0, 2, (n, 32, 12), generator=gen).float() * 2 - 1
        y = torch.randint(0, 2, (n, 32), generator=gen).float() * 2 - 1
        models = [kind.make_model({"hidden": [40]}, sizes) for _ in range(n)]
    else:  # MNIST: stored uint8 images, ToTensor and flatten inside the model; two hidden layers
        x = torch.randint(0, 256, (n, 32, 28, 28), generator=gen, dtype=torch.uint8)
        y = torch.randint(0, 10, (n, 32), generator=gen)
        models = [kind.make_model({"hidden": [30, 20]}, {}) for _ in range(n)]
    return models, x, y


@pytest.mark.parametrize("name", ["sparse_parity", "mnist_mlp"])
def test_hand_written_backward_equals_autograd_per_replica(name):
    from latentstates.tasks.replicas import Replicas

    torch.manual_seed(0)
    models, x, y = _mlps(name, 3)
    kind = get_task(name)
    stacked = Replicas([copy.deepcopy(m) for m in models])
    out, losses = stacked.loss_and_grads(kind, x, y)
    assert stacked.layers is not None and not out.requires_grad
    for i, model in enumerate(models):
        ref_out = model(x[i])
        ref = kind.loss(ref_out, y[i])
        ref.backward()
        assert torch.allclose(out[i], ref_out, atol=1e-6) and abs(losses[i].item() - ref.item()) < 1e-6
        for key, p in model.named_parameters():
            assert torch.allclose(stacked.params[key].grad[i], p.grad, rtol=1e-5, atol=1e-7), key
    # train.backward: autograd takes the same gradients through autograd.
    auto = Replicas([copy.deepcopy(m) for m in models])
    auto.loss_and_grads(kind, x, y, by_hand=False)
    for key, p in auto.params.items():
        assert torch.allclose(p.grad, stacked.params[key].grad, rtol=1e-5, atol=1e-7), key


def test_backward_over_the_rows_with_gradient_equals_the_full_batch(monkeypatch):
    """Past the hinge's margin an example has zero gradient: on the CPU the hand-written backward
    pass runs over the other rows alone, with the same weight gradients bit for bit."""
    from latentstates.tasks import replicas
    from latentstates.tasks.replicas import Replicas, rows_with_gradient

    torch.manual_seed(0)
    models, x, _ = _mlps("sparse_parity", 3)
    kind = get_task("sparse_parity")
    for m in models:  # large outputs: |out| > 1, so the label decides whether a row has gradient
        m.layers[-1].weight.data *= 1000
    out = Replicas([copy.deepcopy(m) for m in models])(x).detach()
    assert (out.abs() > 1).all()
    y = torch.sign(out.squeeze(-1))  # right beyond the margin: no gradient...
    y[0, [1, 5, 6, 30]] *= -1  # ...but these rows (replica 0: 4, replica 1: 2, replica 2: none)
    y[1, [0, 31]] *= -1
    acts, delta = rows_with_gradient([x, x], kind.loss_grad(out, y))
    assert delta.shape == (3, 4, 1) and acts[0].shape == (3, 4, 12)
    assert delta[0].ne(0).all() and delta[1, :2].ne(0).all() and delta[1:, 2:].eq(0).all()
    assert torch.equal(acts[0][0], x[0, [1, 5, 6, 30]]) and torch.equal(acts[0][1, :2], x[1, [0, 31]])

    sparse = Replicas([copy.deepcopy(m) for m in models])
    sparse.loss_and_grads(kind, x, y)
    # No row with gradient in any replica: no products over rows, zero gradients.
    none = Replicas([copy.deepcopy(m) for m in models])
    none.loss_and_grads(kind, x, torch.sign(out.squeeze(-1)))
    assert all(p.grad.eq(0).all() for p in none.params.values())
    monkeypatch.setattr(replicas, "SPARSE_ROWS", 0.0)  # every row, as on a GPU
    full = Replicas([copy.deepcopy(m) for m in models])
    full.loss_and_grads(kind, x, y)
    for key, p in sparse.params.items():
        reference = full.params[key].grad
        exact = torch.equal if key.endswith("weight") else lambda a, b: torch.allclose(a, b, atol=1e-7)
        assert exact(p.grad, reference), key
        assert p.grad[2].eq(0).all(), key  # a replica with no row of gradient: zero gradient
    for i, model in enumerate(models):  # and autograd, replica by replica
        kind.loss(model(x[i]), y[i]).backward()
        for key, p in model.named_parameters():
            assert torch.allclose(sparse.params[key].grad[i], p.grad, rtol=1e-5, atol=1e-7), key
    # Cross-entropy has no zero gradients: the batch is kept whole.
    full_batch = torch.randn(3, 32, 10)
    assert rows_with_gradient([x], full_batch)[1] is full_batch


def test_replicas_finite_flags_exactly_the_replicas_with_a_non_finite_entry():
    from latentstates.tasks.replicas import Replicas

    stacked = Replicas([torch.nn.Linear(3, 2) for _ in range(5)])
    with torch.no_grad():
        stacked.params["weight"][1, 0, 2] = float("nan")
        stacked.params["bias"][2, 1] = float("inf")
        stacked.params["weight"][3, 1, 1] = -float("inf")
        stacked.params["weight"][4] = 3e38  # large but finite: 0·x sums to 0
    assert stacked.finite() == [True, False, False, False, True]
