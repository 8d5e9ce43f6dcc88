"""The paper's image experiments as tasks: MNIST MLP and CIFAR-100 ResNet18 on files written in
each data set's own format, their input pipeline and augmentation, seed-batched training with
BatchNorm, and a tiny workflow run of each that produces every output."""

import copy
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from conftest import REPO, dry_run, snakemake
from latentstates.config import validate_config
from latentstates.measure.hessian import top_eigenvalue
from latentstates.runs.checkpoints import checkpoint_path
from latentstates.runs.runtime import build_run
from latentstates.runs.train import train_group
from latentstates.settings import HessianSettings, TaskSpec
from latentstates.tasks import image_data
from latentstates.tasks.models import ImageInput, ResNet18, random_crop_flip
from latentstates.tasks.replicas import Replicas
from test_image_data import write_cifar100, write_mnist

TRAIN = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.01, "checkpoint_unit": "step"}


def _tasks(data_dir, seeds=3):
    return {
        "mnist": {
            "kind": "mnist_mlp",
            "seeds": seeds,
            "convergence_threshold": 0.97,
            "data": {},
            "model": {"hidden": [16, 16]},
            "train": {**TRAIN, "batch_size": 16, "epochs": 2, "checkpoint_every": 1},
        },
        "cifar": {
            "kind": "cifar100_resnet18",
            "seeds": seeds,
            "convergence_threshold": 0.4,
            "data": {"dir": str(data_dir)},
            "model": {"batch_norm": True, "residual": True},
            "train": {
                **TRAIN,
                "batch_size": 16,
                "epochs": 2,
                "checkpoint_every": 1,
                "train_metrics": "running",
            },
        },
    }


def test_image_input_is_to_tensor_then_normalize():
    x = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    mean, std = image_data.CIFAR100_STATS
    out = ImageInput(mean, std)(x)
    assert out.shape == (2, 3, 32, 32)
    by_hand = (x[1, 5, 7, 2].item() / 255 - mean[2]) / std[2]
    assert out[1, 2, 5, 7].item() == pytest.approx(by_hand, rel=1e-6)
    grey = torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8)
    flat = ImageInput(flatten=True)(grey)
    assert flat.shape == (4, 784) and flat[3, 28 * 2 + 5].item() == pytest.approx(grey[3, 2, 5].item() / 255)


def test_random_crop_flip_is_a_reflect_padded_crop_per_image():
    x = torch.randint(0, 256, (64, 32, 32, 3), dtype=torch.uint8)
    out = random_crop_flip(x, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)  # the same draws, in the same order
    top, left = torch.randint(0, 9, (64,), generator=g), torch.randint(0, 9, (64,), generator=g)
    flip = torch.rand(64, generator=g) < 0.5
    padded = np.pad(x.numpy(), ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect")
    for i in range(64):
        crop = padded[i, top[i] : top[i] + 32, left[i] : left[i] + 32]
        np.testing.assert_array_equal(out[i].numpy(), crop[:, ::-1] if flip[i] else crop)
    assert 0 < flip.sum() < 64 and len(set(zip(top.tolist(), left.tolist()))) > 20


def test_transforms_equal_torchvision_where_it_imports():
    tv = pytest.importorskip("torchvision.transforms.functional", reason="torchvision does not import here")
    x = torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8)
    mean, std = image_data.CIFAR100_STATS
    theirs = torch.stack([tv.normalize(tv.to_tensor(img.numpy()), mean, std) for img in x])
    torch.testing.assert_close(ImageInput(mean, std)(x), theirs, rtol=1e-6, atol=1e-6)
    out = random_crop_flip(x, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    top, left = torch.randint(0, 9, (8,), generator=g), torch.randint(0, 9, (8,), generator=g)
    flip = torch.rand(8, generator=g) < 0.5
    for i in range(8):
        chw = tv.pad(x[i].permute(2, 0, 1), [4], padding_mode="reflect")
        crop = tv.crop(chw, int(top[i]), int(left[i]), 32, 32)
        crop = tv.hflip(crop) if flip[i] else crop
        torch.testing.assert_close(out[i], crop.permute(1, 2, 0))


def test_image_tasks_read_the_prepared_files_shared_by_every_seed(tmp_path):
    written = write_mnist(tmp_path, n_train=20, n_test=8)
    cfg = validate_config({"data_dir": str(tmp_path), "tasks": _tasks(tmp_path)})["tasks"]
    assert cfg["mnist"]["data"]["dir"] == str(tmp_path)  # the global data_dir
    _, split0, model = build_run(TaskSpec.from_dict(cfg["mnist"]).run_spec, 0)
    _, split1, _ = build_run(TaskSpec.from_dict(cfg["mnist"]).run_spec, 1)
    assert split0.x_train is split1.x_train  # read once, shared by the seeds of a job
    np.testing.assert_array_equal(split0.x_train.numpy(), written["train"][0])
    assert [tuple(w.shape) for w in (layer.weight for layer in model.layers)] == [
        (16, 784),
        (16, 16),
        (10, 16),
    ]


def test_stacked_resnets_with_batch_norm_compute_what_each_alone_does():
    # BatchNorm updates its running statistics in place, which vmap cannot do on CUDA: such
    # models run replica by replica on views of the stacked tensors, exactly as each alone.
    models = [ResNet18(100, input=ImageInput(*image_data.CIFAR100_STATS)) for _ in range(2)]
    stacked = Replicas([copy.deepcopy(m) for m in models]).train()
    assert stacked.looped
    x = torch.randint(0, 256, (2, 8, 32, 32, 3), dtype=torch.uint8)
    y = torch.randint(0, 100, (2, 8))
    out = stacked(x)
    losses = torch.stack([F.cross_entropy(out[i], y[i]) for i in range(2)])
    losses.sum().backward()
    for i, model in enumerate(models):
        model.train()
        loss = F.cross_entropy(model(x[i]), y[i])
        loss.backward()
        assert losses[i].item() == loss.item()
        for k, p in model.named_parameters():
            assert torch.equal(stacked.params[k].grad[i], p.grad), k
        for k, b in model.named_buffers():  # BatchNorm's running statistics, per replica
            assert torch.equal(stacked.buffers[k][i], b), k


@pytest.fixture
def float64():
    """Models and image inputs in float64 for the test (float32's rounding, amplified by
    BatchNorm's backward over a tiny batch, would hide a real difference)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


@pytest.mark.parametrize("batch_norm, residual", [(True, True), (False, True), (True, False)])
def test_grouped_resnets_compute_what_each_alone_does(batch_norm, residual, float64):
    """A seed group's ResNet18s as one network of grouped convolutions (`train.stacking: grouped`):
    each replica's outputs, gradients and BatchNorm running statistics after a training step equal
    its model's alone (float64: to 1e-10 relative); in eval mode too (running statistics used)."""
    torch.manual_seed(0)
    models = [
        ResNet18(100, batch_norm, residual, input=ImageInput(*image_data.CIFAR100_STATS)) for _ in range(3)
    ]
    stacked = Replicas([copy.deepcopy(m) for m in models], grouped=True).train()
    assert stacked.grouped is not None and not stacked.looped
    x = torch.randint(0, 256, (3, 4, 16, 16, 3), dtype=torch.uint8)
    y = torch.randint(0, 100, (3, 4))
    out = stacked(x)
    torch.stack([F.cross_entropy(out[i], y[i]) for i in range(3)]).sum().backward()
    close = dict(rtol=1e-10, atol=1e-12)
    for i, model in enumerate(models):
        model.train()
        alone = model(x[i])
        F.cross_entropy(alone, y[i]).backward()
        torch.testing.assert_close(out[i], alone, **close)
        for k, p in model.named_parameters():
            if p.grad is None:  # the downsample path of a block without its shortcut
                assert stacked.params[k].grad is None or not stacked.params[k].grad[i].any(), k
            else:
                torch.testing.assert_close(stacked.params[k].grad[i], p.grad, **close, msg=k)
        for k, b in model.named_buffers():
            torch.testing.assert_close(stacked.buffers[k][i], b, **close, msg=k)
    stacked.eval()
    with torch.no_grad():
        out = stacked(x)
        for i, model in enumerate(models):
            torch.testing.assert_close(out[i], model.eval()(x[i]), **close)
    assert not torch.allclose(out[0], out[1])  # the replicas differ


@pytest.mark.slow
def test_cifar_seeds_batched_equal_seeds_alone(tmp_path):
    # Each seed of a group keeps its initialisation, data order, augmentation draws, optimiser
    # state and BatchNorm statistics. Models with BatchNorm run replica by replica, so the
    # group's arithmetic is each seed's own: equal to the bit.
    write_cifar100(tmp_path, n_train=16, n_test=4)
    task = validate_config({"tasks": _tasks(tmp_path)})["tasks"]["cifar"]
    task["train"].update(batch_size=8, epochs=2, checkpoint_every=2)  # 4 steps, a new data order at step 2
    batched = train_group(
        TaskSpec.from_dict(task), [0, 1], [tmp_path / "b0", tmp_path / "b1"], device="cpu", progress=False
    )
    for seed in (0, 1):
        alone = train_group(
            TaskSpec.from_dict(task), [seed], [tmp_path / f"a{seed}"], device="cpu", progress=False
        )[0]
        assert alone["checkpoint"].tolist() == batched[seed]["checkpoint"].tolist() == [0, 1, 2]
        cols = ["train_loss", "train_acc", "eval_loss", "eval_acc"]
        np.testing.assert_array_equal(batched[seed][cols], alone[cols])
        a = torch.load(checkpoint_path(tmp_path / f"a{seed}", 2), weights_only=True)["model"]
        b = torch.load(checkpoint_path(tmp_path / f"b{seed}", 2), weights_only=True)["model"]
        assert a.keys() == b.keys() and any("running_mean" in k for k in a)
        for k in a:  # parameters and BatchNorm statistics
            assert torch.equal(b[k], a[k]), k
    different = torch.load(checkpoint_path(tmp_path / "a0", 2), weights_only=True)["model"]
    assert not torch.allclose(different["fc.weight"], b["fc.weight"])  # seeds 0 and 1 differ


@pytest.mark.slow
def test_cifar_seeds_trained_as_grouped_convolutions_follow_each_seed_alone(tmp_path, float64):
    # train.stacking: grouped (the default on a GPU): the group's seeds train as one network of
    # grouped convolutions; each seed's log and checkpoint follow its training alone over four
    # steps (BatchNorm's statistics included), in float64 to 1e-8 (in float32 SGD through
    # BatchNorm over batches of 8 grows the rounding to ~1e-3 in four steps).
    write_cifar100(tmp_path, n_train=16, n_test=4)
    task = validate_config({"tasks": _tasks(tmp_path)})["tasks"]["cifar"]
    task["train"].update(batch_size=8, epochs=2, checkpoint_every=2, stacking="grouped")
    grouped = train_group(
        TaskSpec.from_dict(task), [0, 1], [tmp_path / "g0", tmp_path / "g1"], device="cpu", progress=False
    )
    task["train"]["stacking"] = "one_by_one"
    for seed in (0, 1):
        alone = train_group(
            TaskSpec.from_dict(task), [seed], [tmp_path / f"a{seed}"], device="cpu", progress=False
        )[0]
        cols = ["train_loss", "eval_loss"]
        np.testing.assert_allclose(grouped[seed][cols], alone[cols], rtol=1e-8)
        a = torch.load(checkpoint_path(tmp_path / f"a{seed}", 2), weights_only=True)["model"]
        g = torch.load(checkpoint_path(tmp_path / f"g{seed}", 2), weights_only=True)["model"]
        for k in a:
            if a[k].is_floating_point():
                torch.testing.assert_close(g[k], a[k], rtol=1e-8, atol=1e-10, msg=k)
            else:
                assert torch.equal(g[k], a[k]), k  # num_batches_tracked


@pytest.mark.slow
def test_image_tasks_run_through_the_workflow(make_workdir, tmp_path):
    data = tmp_path / "data"
    write_mnist(data, n_train=48, n_test=16)
    write_cifar100(data, n_train=32, n_test=16)
    # A short power iteration: a ResNet-18's Hessian-vector products made CIFAR's metrics jobs
    # the slowest of the test suite (max_iter 10: 137 s and 81 s on an AVX2 machine; 4: ~half).
    config = {
        "data_dir": str(data),
        "seeds_per_job": 2,
        "metrics": {"hessian": {"batch_size": 16, "stride": 2, "max_iter": 4}},
        "hmm": {
            "max_states": 2,
            "restarts": 1,
            "max_iter": 10,
            "features": ["l1", "l2", "spectral", "mean_w"],
            "criterion": "bic_train",
        },
        "plots": {"max_runs": 2},
        "forecast": {"fractions": [0.5], "folds": 3, "restarts": 1, "samples": 100},
        "tasks": _tasks(data),
    }
    wd = make_workdir(config)
    snakemake(wd)
    res = wd / "results"
    for task, checkpoints in (("mnist", 7), ("cifar", 5)):  # 3 and 2 steps per epoch, 2 epochs
        metrics = pd.read_parquet(res / task / "metrics.parquet")
        assert len(metrics) == 3 * checkpoints, task
        assert (
            metrics[["l1", "l2", "spectral", "trace", "mean_b", "eval_acc", "train_acc"]].notna().all().all()
        )
        assert metrics.loc[metrics["checkpoint"] % 2 == 0, "hessian_top_eig"].notna().all()
        for figure in ("training_curves", "transition_graph", "model_selection"):
            assert (res / task / "figures" / f"{figure}.png").stat().st_size > 0
        assert json.loads((res / task / "analysis" / "summary.json").read_text())
    summary = pd.read_csv(res / "summary.csv")
    assert {"mnist", "cifar"} <= set(summary["task"])
    # CIFAR: the fc layer's statistics with the kernels' joined in; the train metrics are the
    # training batches' (running), which differ from a full pass.
    cifar = pd.read_parquet(res / "cifar" / "metrics.parquet")
    assert (cifar["code_sparsity"] > 0).all()
    # Nothing left to do, and the data were not "prepared" (they were there).
    dry = snakemake(wd, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr
    assert not (data / "prepare_mnist.log").exists()


def test_missing_image_data_stops_naming_the_directory(make_workdir, tmp_path):
    data = tmp_path / "empty"
    config = {"data_dir": str(data), "tasks": {"mnist": _tasks(data)["mnist"]}}
    wd = make_workdir(config)
    proc = snakemake(wd, check=False)
    assert proc.returncode != 0
    for text in ((data / "prepare_mnist.log").read_text(), proc.stderr + proc.stdout):  # log, console
        assert f"{data / 'MNIST' / 'raw'}: mnist is not prepared here" in text
        assert "train-images-idx3-ubyte" in text and "prepare_mnist" in text
    assert not (wd / "results" / "mnist" / "runs").exists()  # no seed ran, nothing downloaded per seed


def test_paper_config_plans_every_paper_experiment(tmp_path):
    """A dry run of configs/paper.yaml lists every experiment of the paper and its recipe
    comparisons, with the data prepared once per data set (not per seed)."""
    out = dry_run(tmp_path, REPO / "configs" / "paper.yaml", "--quiet", "rules")
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M))
    for task in (
        "sparse_parity",
        "modular_addition",
        "modular_addition_ln",
        "mnist_mlp",
        "cifar100_resnet18",
        "cifar100_resnet18_plain",
    ):
        trains = [r for r in counts if r.startswith(f"train_{task}_seeds")]
        seeds = sum(
            int(b) - int(a) + 1 for a, b in (re.search(r"seeds(\d+)_(\d+)$", r).groups() for r in trains)
        )
        assert seeds == 40, (task, trains)
    assert counts["prepare_mnist"] == counts["prepare_cifar100"] == "1"
    assert counts["hmm"] == counts["analysis"] == "6"
    # The paper's two recipe comparisons (±LayerNorm, ±BN/residuals), each through one shared HMM.
    assert counts["comparison_hmm"] == counts["comparison"] == counts["plot_comparison"] == "2"
    assert counts["comparison_table"] == "1"


def test_hessian_of_the_resnet_without_residuals_skips_its_unused_downsample_path():
    # Without residuals the downsample path's parameters take no part in the loss: their
    # Hessian rows are zero, instead of autograd's "not used in the graph" error that once
    # stopped this variant's metrics job.
    torch.manual_seed(0)
    model = ResNet18(
        100, batch_norm=False, residual=False, input=ImageInput(*image_data.CIFAR100_STATS)
    ).eval()
    x = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    y = torch.randint(0, 100, (4,))
    names, params = zip(*model.named_parameters())
    res = top_eigenvalue(
        lambda: F.cross_entropy(model(x), y),
        params,
        generator=torch.Generator().manual_seed(0),
        **HessianSettings.defaults().replace(max_iter=3, min_iter=1).lanczos(),
    )
    assert math.isfinite(res.eigenvalue) and res.iterations == 3
    assert any("downsample" in n for n in names)  # the parameters that used to stop it


def test_the_gpu_suites_short_config_plans_every_stage(tmp_path):
    """configs/gpu_short.yaml (benchmarks/gpu_suite.sh's end-to-end step) plans every stage: one
    training and one metrics job of 16 seeds per task, the HMM and analyses, the digits' LLC and
    the LayerNorm comparison."""
    out = dry_run(tmp_path, REPO / "configs" / "gpu_short.yaml", "--quiet", "rules")
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M))
    for task in ("sparse_parity", "modular_addition", "modular_addition_ln", "digits_mlp"):
        assert counts[f"train_{task}_seeds0_15"] == counts[f"metrics_{task}_seeds0_15"] == "1"
    assert counts["hmm"] == counts["analysis"] == counts["stability"] == "4"
    assert counts["llc_analysis"] == counts["comparison"] == "1"
