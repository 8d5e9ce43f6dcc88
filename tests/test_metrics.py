import math

import numpy as np
import pytest
import torch

from latentstates.columns import PAPER_FEATURES
from latentstates.measure.metrics import GRAM_MIN_SIDE, SINGULAR_VALUE_CUTOFF, matrix_metrics, weight_metrics


def test_matrix_metrics_by_hand():
    # W = [[3, 0], [0, -4], [0, 0]]: singular values 4 and 3.
    w = torch.tensor([[3.0, 0.0], [0.0, -4.0], [0.0, 0.0]])
    m = matrix_metrics(w)
    assert m["l1"] == pytest.approx(7.0)
    assert m["l2"] == pytest.approx(5.0)
    assert m["trace"] == pytest.approx(-1.0)  # main diagonal of a rectangular matrix
    assert m["spectral"] == pytest.approx(4.0)
    assert m["code_sparsity"] == pytest.approx(7.0 / 5.0)
    assert m["computational_sparsity"] == pytest.approx(-1.0 / 4.0)
    assert m["mean_lambda"] == pytest.approx(3.5)
    assert m["variance_lambda"] == pytest.approx(0.5)  # unbiased: ((0.5)^2 * 2) / 1


def test_small_singular_values_are_zeroed():
    w = torch.diag(torch.tensor([2.0, 1e-7], dtype=torch.float64))
    m = matrix_metrics(w)
    assert m["mean_lambda"] == pytest.approx(1.0)  # (2 + 0) / 2, not (2 + 1e-7) / 2 exactly
    assert m["variance_lambda"] == pytest.approx(2.0)


def test_weight_metrics_average_and_global_moments():
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    b = torch.tensor([[0.0, 5.0]])  # one row: one singular value, variance undefined
    biases = [torch.tensor([1.0, -1.0]), torch.tensor([4.0])]
    out = weight_metrics([a, b], biases)
    assert list(out) == PAPER_FEATURES
    ma, mb = matrix_metrics(a), matrix_metrics(b)
    for key in ["l1", "l2", "trace", "spectral", "code_sparsity", "computational_sparsity", "mean_lambda"]:
        assert out[key] == pytest.approx((ma[key] + mb[key]) / 2)
    assert math.isnan(mb["variance_lambda"])
    assert out["variance_lambda"] == pytest.approx(ma["variance_lambda"])  # NaN-ignoring mean
    flat = np.array([1, 2, 3, 4, 0, 5], dtype=float)
    assert out["mean_w"] == pytest.approx(flat.mean())
    # Even count: the lower middle value, as torch.median in the released code (not numpy's 2.5).
    assert out["median_w"] == torch.median(torch.tensor(flat)).item() == 2.0
    assert out["var_w"] == pytest.approx(flat.var(ddof=1))
    assert out["mean_b"] == pytest.approx(4 / 3)
    assert out["median_b"] == pytest.approx(1.0)
    assert out["var_b"] == pytest.approx(np.var([1, -1, 4], ddof=1))


def test_trace_and_singular_values_against_numpy():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 7))
    m = matrix_metrics(torch.tensor(w))
    sv = np.linalg.svd(w, compute_uv=False)
    assert m["trace"] == pytest.approx(np.trace(w))
    assert m["spectral"] == pytest.approx(sv[0])
    assert m["mean_lambda"] == pytest.approx(sv.mean())
    assert m["variance_lambda"] == pytest.approx(sv.var(ddof=1))
    assert m["l1"] == pytest.approx(np.abs(w).sum())


def test_no_biases_gives_nan_not_error():
    out = weight_metrics([torch.eye(2)], [])
    assert math.isnan(out["mean_b"])


def test_non_finite_weights_give_nan_metrics():
    w = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    m = matrix_metrics(w)
    assert all(math.isnan(v) for v in m.values())


def test_batched_matrix_statistics_match_numpy_per_matrix():
    rng = np.random.default_rng(0)
    shapes = [(16, 64)] * 5 + [(64, 64), (256, 64), (64, 256), (1, 8)]
    mats = [torch.tensor(rng.normal(size=s)) for s in shapes]
    mats[2][0, 0] = 0.0
    out = weight_metrics(mats, [])
    expected = {name: [] for name in ["l1", "l2", "trace", "spectral", "mean_lambda"]}
    var_sv = []
    for m in mats:
        a = m.numpy()
        sv = np.linalg.svd(a, compute_uv=False)
        expected["l1"].append(np.abs(a).sum())
        expected["l2"].append(np.sqrt((a**2).sum()))
        expected["trace"].append(np.trace(a))
        expected["spectral"].append(sv.max())
        expected["mean_lambda"].append(sv.mean())
        var_sv.append(sv.var(ddof=1) if len(sv) > 1 else np.nan)
    for name, values in expected.items():
        np.testing.assert_allclose(out[name], np.mean(values), rtol=1e-10)
    np.testing.assert_allclose(out["variance_lambda"], np.nanmean(var_sv), rtol=1e-10)
    ratio = [l1 / l2 for l1, l2 in zip(expected["l1"], expected["l2"])]
    np.testing.assert_allclose(out["code_sparsity"], np.mean(ratio), rtol=1e-10)


@pytest.mark.parametrize("shape", [(256, 256), (300, 1200), (1200, 300)])
def test_large_matrices_singular_values_from_the_gram_matrix_equal_numpys_svd(shape):
    """Above GRAM_MIN_SIDE the singular values come from the Gram matrix's eigenvalues: every
    statistic equals numpy's SVD to 1e-9, for a full-rank matrix and for a rank-deficient one
    with a spread of singular values (whose zeros stay below the cutoff)."""
    rng = np.random.default_rng(1)
    m, n = shape
    full = rng.normal(scale=0.05, size=shape)
    u, _ = np.linalg.qr(rng.normal(size=(m, m)))
    v, _ = np.linalg.qr(rng.normal(size=(n, n)))
    k = min(m, n) // 2
    low = (u[:, :k] * np.logspace(1, -3, k)) @ v[:k]  # rank k, singular values 10 … 1e-3
    for a in (full, low):
        got = matrix_metrics(torch.tensor(a))
        sv = np.linalg.svd(a, compute_uv=False)
        sv = np.where(sv < SINGULAR_VALUE_CUTOFF, 0.0, sv)
        assert got["spectral"] == pytest.approx(sv.max(), rel=1e-9)
        assert got["mean_lambda"] == pytest.approx(sv.mean(), rel=1e-9)
        assert got["variance_lambda"] == pytest.approx(sv.var(ddof=1), rel=1e-9)
        assert got["computational_sparsity"] == pytest.approx(np.trace(a) / sv.max(), rel=1e-9)
    assert min(shape) >= GRAM_MIN_SIDE


def test_kernel_metrics_by_hand_on_a_2x2x3x3_kernel():
    from latentstates.measure.metrics import kernel_metrics

    k = torch.zeros(2, 2, 3, 3, dtype=torch.float64)
    k[0, 0] = 1.0  # nine ones: L1 9, L2 3, L1/L2 3
    k[0, 1, 1, 1] = -2.0  # one entry: L1 2, L2 2, L1/L2 1
    k[1, 0, 0, :] = torch.tensor([3.0, 0.0, -4.0])  # L1 7, L2 5, L1/L2 1.4
    k[1, 1] = torch.arange(9, dtype=torch.float64).reshape(3, 3) - 4  # L1 20, L2 sqrt(60)
    l2_last = 60**0.5
    got = kernel_metrics(k)
    assert got["l1"] == pytest.approx((9 + 2 + 7 + 20) / 4, rel=1e-12)
    assert got["l2"] == pytest.approx((3 + 2 + 5 + l2_last) / 4, rel=1e-12)
    assert got["code_sparsity"] == pytest.approx((3 + 1 + 1.4 + 20 / l2_last) / 4, rel=1e-12)
    with pytest.raises(ValueError, match="convolution weight"):
        kernel_metrics(torch.zeros(3, 3))


def test_kernels_join_the_per_layer_averages_of_l1_l2_and_code_sparsity_only():
    from latentstates.measure.metrics import kernel_metrics, matrix_metrics, weight_metrics

    g = torch.Generator().manual_seed(0)
    fc = torch.randn(5, 4, generator=g)
    convs = [torch.randn(3, 2, 3, 3, generator=g), torch.randn(4, 3, 3, 3, generator=g)]
    bias = torch.randn(5, generator=g)
    got = weight_metrics([fc], [bias], convs)
    m, ks = matrix_metrics(fc), [kernel_metrics(c) for c in convs]
    for name in ("l1", "l2", "code_sparsity"):  # the mean over the layers that have it
        assert got[name] == pytest.approx((m[name] + ks[0][name] + ks[1][name]) / 3, rel=1e-12)
    for name in ("trace", "spectral", "computational_sparsity", "mean_lambda", "variance_lambda"):
        assert got[name] == pytest.approx(m[name], rel=1e-12)  # the final linear layer's alone
    everything = torch.cat([fc.flatten(), *(c.flatten() for c in convs)]).double()
    assert got["mean_w"] == pytest.approx(float(everything.mean()), rel=1e-12)
    assert got["var_w"] == pytest.approx(float(everything.var()), rel=1e-12)
    assert got["mean_b"] == pytest.approx(float(bias.double().mean()), rel=1e-12)
    assert weight_metrics([fc], [bias]) == weight_metrics([fc], [bias], [])
