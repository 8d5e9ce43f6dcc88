import math

import numpy as np
import pytest
import torch

from latentstates.columns import PAPER_FEATURES
from latentstates.measure.metrics import SINGULAR_VALUE_CUTOFF, matrix_metrics, weight_metrics
from latentstates.measure.spectra import GRAM_MIN_SIDE


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


# --- layer by layer (language-model checkpoints read tensor by tensor) ---


def _layers(dtype, seed=0, nan=False):
    """Three layers of matrices (two shapes), biases and a kernel, with ties, zeros of both signs
    and an odd total count."""
    g = torch.Generator().manual_seed(seed)
    layers = []
    for i in range(3):
        a = (torch.randn(7, 5, generator=g) * 0.1).to(dtype)
        b = (torch.randn(3, 9, generator=g) * 0.1).to(dtype)
        a[0, :3] = torch.tensor([0.0, -0.0, 0.25])  # zeros of both signs and a tie across layers
        if nan and i == 1:
            b[1, 1] = float("nan")
        k = (torch.randn(2, 2, 3, 3, generator=g) * 0.1).to(dtype) if i == 0 else None
        layers.append(([a, b], [torch.randn(4, generator=g)], [k] if k is not None else []))
    layers.append(([torch.randn(1, 3, generator=g).to(dtype)], [], []))  # odd total
    return layers


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("keep", [10**9, 40])
def test_layer_by_layer_equals_all_at_once(dtype, keep, monkeypatch):
    """Streamed over layers, kept or counted in buckets (keep=40 forces the buckets and, unless
    every weight is 16-bit, the second pass), the 14 features equal weight_metrics of the whole
    model: the median exactly, the rest to rounding; 16-bit weights need one pass only."""
    from latentstates.measure import metrics

    layers = _layers(dtype)
    whole = weight_metrics(
        [m for layer in layers for m in layer[0]],
        [b for layer in layers for b in layer[1]],
        [k for layer in layers for k in layer[2]],
    )
    monkeypatch.setattr(metrics, "MEDIAN_KEEP_VALUES", keep)
    passes = []

    def stream():
        passes.append(1)
        return iter(layers)

    got = metrics.streamed_weight_metrics(stream)
    assert list(got) == list(whole)
    for name in whole:
        assert got[name] == pytest.approx(whole[name], rel=1e-12, abs=1e-15), name
    assert got["median_w"] == whole["median_w"]
    flat = torch.cat([t.reshape(-1).double() for layer in layers for t in (*layer[0], *layer[2])])
    assert got["median_w"] == torch.median(flat).item()  # torch's lower median
    exact_one_pass = keep == 10**9 or dtype in (torch.float16, torch.bfloat16)
    assert len(passes) == (1 if exact_one_pass else 2)


@pytest.mark.parametrize("keep", [10**9, 10])
def test_median_with_nan_and_mixed_precision(keep, monkeypatch):
    """NaNs sort last (numpy's partition: the median stays a number while fewer than half are
    NaN); float16 and float32 layers mix in one model."""
    from latentstates.measure import metrics

    monkeypatch.setattr(metrics, "MEDIAN_KEEP_VALUES", keep)
    layers = _layers(torch.float32, nan=True)
    layers[2] = ([m.half() for m in layers[2][0]], layers[2][1], [])
    values = np.concatenate([m.double().numpy().ravel() for layer in layers for m in (*layer[0], *layer[2])])
    got = metrics.streamed_weight_metrics(lambda: iter(layers))
    assert got["median_w"] == metrics.lower_median(values)
    assert math.isnan(got["mean_w"]) and math.isnan(got["var_w"])


def test_bucket_order_is_value_order_and_16_bit_values_are_exact():
    from latentstates.measure.metrics import _bucket_value, _buckets

    x = np.array([-np.inf, -2.5, -1e-30, -0.0, 0.0, 1e-30, 3e-8, 0.1, 7.0, np.inf])
    assert (np.diff(_buckets(x).astype(np.int64)) >= 0).all()
    halves = torch.tensor([-65504.0, -1.5, -6e-8, 0.0, 6e-8, 0.099975586, 1.0, 65504.0]).half()
    for h in (*halves, *halves.bfloat16()):
        b = int(_buckets(np.array([float(h)]))[0])
        assert _bucket_value(b) == float(h)


@pytest.mark.parametrize("shape", [(300, 700), (700, 300)])
def test_the_gpus_eigenvalue_path_run_on_the_cpu_equals_the_cpus(shape):
    """The GPU's path (torch's eigenvalues of the Gram matrix) equals the CPU's (scipy's), and
    both numpy's SVD."""
    from latentstates.measure.spectra import singular_values

    rng = np.random.default_rng(3)
    w = torch.tensor(rng.normal(scale=0.05, size=(2, *shape)))
    reference = np.linalg.svd(w.numpy(), compute_uv=False)
    for lapack in ("scipy", "torch"):
        np.testing.assert_allclose(singular_values(w, lapack).numpy(), reference, rtol=1e-10)
