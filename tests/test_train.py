import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO
from latentstates.columns import PAPER_FEATURES
from latentstates.measure.extract import run_metrics
from latentstates.runs.checkpoints import list_checkpoints, load_checkpoint
from latentstates.runs.train import train_group, train_run
from latentstates.settings import HessianSettings, HMMSettings, TaskSpec, TrainSettings


def test_training_is_deterministic_and_checkpoints_every_interval(tmp_path, config):
    cfg = config()["tasks"]["modular_addition"]
    a = train_run(TaskSpec.from_dict(cfg), 1, tmp_path / "a", progress=False)
    b = train_run(TaskSpec.from_dict(cfg), 1, tmp_path / "b", progress=False)
    pd.testing.assert_frame_equal(a, b)
    total, every = cfg["train"]["epochs"], cfg["train"]["checkpoint_every"]
    assert a["step"].tolist() == list(range(0, total + 1, every))
    pa, pb = list_checkpoints(tmp_path / "a"), list_checkpoints(tmp_path / "b")
    assert len(pa) == total // every + 1
    last_a, last_b = load_checkpoint(pa[-1]), load_checkpoint(pb[-1])
    for k in last_a["model"]:
        assert torch.equal(last_a["model"][k], last_b["model"][k])
    assert (a[["seed", "init_seed", "data_seed", "order_seed"]].nunique() == 1).all()


def test_different_seeds_differ(tmp_path, config):
    cfg = config()["tasks"]["sparse_parity"]
    a = train_run(TaskSpec.from_dict(cfg), 0, tmp_path / "a", progress=False)
    b = train_run(TaskSpec.from_dict(cfg), 1, tmp_path / "b", progress=False)
    assert not a["train_loss"].equals(b["train_loss"])


def test_parity_learns(tmp_path, config):
    cfg = config()["tasks"]["sparse_parity"]
    cfg["train"]["epochs"] = 200
    log = train_run(TaskSpec.from_dict(cfg), 0, tmp_path, progress=False)
    assert log["train_acc"].iloc[-1] > 0.95 and log["eval_acc"].iloc[-1] > 0.9
    assert log["train_acc"].iloc[-1] > log["train_acc"].iloc[0] + 0.3


def test_metrics_of_a_run(tmp_path, config):
    cfg = config()["tasks"]["sparse_parity"]
    log = train_run(TaskSpec.from_dict(cfg), 0, tmp_path, progress=False)
    hess = HessianSettings.defaults(batch_size=64, stride=2, tol=1e-3, max_iter=30, seed=0, krylov_dim=20)
    df = run_metrics(TaskSpec.from_dict(cfg), 0, tmp_path, log, hess, progress=False)
    assert len(df) == len(log)
    assert set(PAPER_FEATURES) <= set(df.columns)
    assert df[PAPER_FEATURES].notna().all().all()
    assert df.loc[df.checkpoint % 2 == 0, "hessian_top_eig"].notna().all()
    assert df.loc[df.checkpoint % 2 == 1, "hessian_top_eig"].isna().all()
    pd.testing.assert_series_equal(df["eval_acc"], log["eval_acc"], check_names=False)


def test_hessian_batch_size_zero_is_the_whole_training_set(tmp_path, config):
    cfg = config()["tasks"]["sparse_parity"]
    cfg["train"]["epochs"] = 4
    log = train_run(TaskSpec.from_dict(cfg), 0, tmp_path, progress=False)
    n_train = cfg["data"]["n_train"]
    hess = HessianSettings.defaults(stride=2, tol=1e-6, max_iter=60, seed=0, krylov_dim=20)
    whole = run_metrics(TaskSpec.from_dict(cfg), 0, tmp_path, log, hess.replace(batch_size=0), progress=False)
    full = run_metrics(
        TaskSpec.from_dict(cfg), 0, tmp_path, log, hess.replace(batch_size=n_train), progress=False
    )
    part = run_metrics(TaskSpec.from_dict(cfg), 0, tmp_path, log, hess.replace(batch_size=32), progress=False)
    pd.testing.assert_series_equal(whole["hessian_top_eig"], full["hessian_top_eig"])
    assert not np.allclose(whole["hessian_top_eig"].dropna(), part["hessian_top_eig"].dropna())


def test_diverged_run_is_flagged_kept_and_left_out_of_the_hmm(tmp_path, config):
    from latentstates.states.selection import fit_task

    cfg = config()["tasks"]["sparse_parity"]
    hess = HessianSettings.defaults(batch_size=64, stride=1, tol=1e-3, max_iter=20, seed=0, krylov_dim=20)
    frames = []
    for seed, lr in [(0, 0.1), (1, 0.1), (2, 0.1), (3, 50.0)]:
        cfg["train"]["lr"] = lr
        log = train_run(TaskSpec.from_dict(cfg), seed, tmp_path / str(seed), progress=False)
        df = run_metrics(TaskSpec.from_dict(cfg), seed, tmp_path / str(seed), log, hess, progress=False)
        df["seed"] = seed
        frames.append(df)
    bad = frames[-1]
    assert bad["diverged"].iloc[-1] and not bad["diverged"].iloc[0]
    assert len(bad) < len(frames[0])  # training stopped at the divergence
    last = bad.iloc[-1]
    assert not (np.isfinite(last["train_loss"]) and np.isfinite(last["eval_loss"]))
    metrics = pd.concat(frames, ignore_index=True)
    hmm_cfg = {
        "features": PAPER_FEATURES,
        "val_fraction": 0.0,
        "seed": 0,
        "max_states": 2,
        "restarts": 1,
        "covariance": "diag",
        "max_iter": 5,
        "tol": 0.1,
        "var_floor": 1e-3,
        "covariance_prior": 1e-2,
        "criterion": "bic",
        "n_states": None,
    }
    fit = fit_task(metrics, HMMSettings.defaults(**hmm_cfg))
    assert fit.excluded["seed"].tolist() == [3]
    assert "diverged" in fit.excluded["reason"].iloc[0]
    assert sorted(fit.states["seed"].unique()) == [0, 1, 2]
    assert "3" in fit.model.excluded_runs


def _plain_training(cfg: dict, seed: int, steps: int, batches: list | None = None) -> dict[str, torch.Tensor]:
    """The paper's way, written out independently: one nn.Module, its own optimiser and data
    order, `steps` steps; returns the final state dict. Each step's (loss, outputs, labels) is
    appended to `batches` if given."""
    from latentstates.runs.runtime import build_run, run_seeds
    from latentstates.runs.train import schedule

    kind, split, model = build_run(TaskSpec.from_dict(cfg).run_spec, seed)
    train = cfg["train"]
    if train["optimizer"] == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=train["lr"], weight_decay=train["weight_decay"])
    else:
        opt = torch.optim.AdamW(
            model.parameters(), lr=train["lr"], weight_decay=train["weight_decay"], betas=train["betas"]
        )
    batch, per_epoch, _ = schedule(len(split.x_train), TrainSettings.from_dict(train))
    order = torch.Generator().manual_seed(run_seeds(seed, None)["order_seed"])
    for step in range(steps):
        if step % per_epoch == 0:
            perm = torch.randperm(len(split.x_train), generator=order)
        idx = perm[(step % per_epoch) * batch : (step % per_epoch + 1) * batch]
        out = model(split.x_train[idx])
        loss = kind.loss(out, split.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if batches is not None:
            batches.append((loss.item(), out.detach(), split.y_train[idx]))
    return model.state_dict()


def _small_digits(config) -> dict:
    cfg = config(REPO / "config.yaml")["tasks"]["digits_mlp"]
    cfg["model"]["hidden"] = [24, 16]  # two hidden layers: the backward pass crosses a ReLU twice
    cfg["train"].update(batch_size=200, checkpoint_every=1, checkpoint_unit="epoch")
    return cfg


@pytest.mark.parametrize("task", ["sparse_parity", "modular_addition", "digits_mlp"])
def test_seeds_trained_together_equal_seeds_trained_alone(task, tmp_path, config):
    # Parities and digits backpropagate by hand (train.backward auto); the plain training below
    # uses autograd, so it also checks the hand-written backward pass over a few hundred steps.
    cfg = _small_digits(config) if task == "digits_mlp" else config()["tasks"][task]
    from latentstates.runs.runtime import build_run
    from latentstates.runs.train import schedule

    _, steps_per_epoch, _ = schedule(
        len(build_run(TaskSpec.from_dict(cfg).run_spec, 0)[1].x_train), TrainSettings.from_dict(cfg["train"])
    )
    cfg["train"]["epochs"] = -(-300 // steps_per_epoch)  # a few hundred steps
    total = cfg["train"]["epochs"] * steps_per_epoch
    seeds = [3, 4, 5]
    together = train_group(
        TaskSpec.from_dict(cfg), seeds, [tmp_path / f"group{s}" for s in seeds], progress=False
    )
    for seed, log in zip(seeds, together):
        alone = train_run(TaskSpec.from_dict(cfg), seed, tmp_path / f"alone{seed}", progress=False)
        assert log["checkpoint"].tolist() == alone["checkpoint"].tolist()
        assert log["step"].tolist() == alone["step"].tolist()
        pd.testing.assert_frame_equal(log, alone, check_exact=False, atol=1e-5, rtol=0)
        ga, gb = list_checkpoints(tmp_path / f"group{seed}"), list_checkpoints(tmp_path / f"alone{seed}")
        assert [p.name for p in ga] == [p.name for p in gb]
        for pa, pb in zip(ga, gb):
            a, b = load_checkpoint(pa)["model"], load_checkpoint(pb)["model"]
            assert a.keys() == b.keys()
            assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5
        # ... and both equal plain one-module training, written out above.
        plain = _plain_training(cfg, seed, total)
        assert max((plain[k] - a[k]).abs().max().item() for k in a) <= 1e-5
    # The seeds of a group are different runs.
    assert not together[0]["train_loss"].equals(together[1]["train_loss"])


def test_diverging_seeds_of_a_group_stop_where_they_would_alone(tmp_path, config):
    cfg = config()["tasks"]["modular_addition"]
    cfg["train"]["lr"] = 3.0  # seed 0 diverges two steps after seeds 1 and 2
    seeds = [0, 1, 2]
    logs = train_group(TaskSpec.from_dict(cfg), seeds, [tmp_path / f"g{s}" for s in seeds], progress=False)
    for seed, log in zip(seeds, logs):
        alone = train_run(TaskSpec.from_dict(cfg), seed, tmp_path / f"a{seed}", progress=False)
        assert log["diverged"].iloc[-1] and not log["diverged"].iloc[:-1].any()
        pd.testing.assert_frame_equal(log, alone)
        assert len(list_checkpoints(tmp_path / f"g{seed}")) == len(log)


def test_resume_log_round_trips_exactly_and_reads_older_states():
    from latentstates.runs.checkpoints import encode_log, resume_rows

    rows = [
        {"checkpoint": 0, "step": 0, "epoch": 0.0, "train_loss": 0.1 + 0.2, "diverged": False},
        {"checkpoint": 1, "step": 7, "epoch": 1 / 3, "train_loss": float("nan"), "diverged": True},
    ]
    back = resume_rows({"log": encode_log(rows)})
    pd.testing.assert_frame_equal(pd.DataFrame(back), pd.DataFrame(rows))
    assert resume_rows({"rows": rows}) == rows  # a resume state written before the encoded log


def test_running_train_metrics_are_the_epochs_batches_as_released(tmp_path, config):
    # train_metrics running (the parities' setting, as the released sparse_parities.py): at each
    # epoch's checkpoint, the mean of the epoch's batch losses and the accuracy of sign(output)
    # over its examples, taken during training, written out independently here.
    from latentstates.runs.runtime import build_run
    from latentstates.runs.train import schedule

    cfg = config()["tasks"]["sparse_parity"]
    cfg["train"].update(epochs=4, checkpoint_every=1, checkpoint_unit="epoch", train_metrics="running")
    seeds = [3, 4]
    logs = train_group(TaskSpec.from_dict(cfg), seeds, [tmp_path / f"s{s}" for s in seeds], progress=False)
    n = len(build_run(TaskSpec.from_dict(cfg).run_spec, 0)[1].x_train)
    _, per_epoch, _ = schedule(n, TrainSettings.from_dict(cfg["train"]))
    for seed, log in zip(seeds, logs):
        batches = []
        _plain_training(cfg, seed, cfg["train"]["epochs"] * per_epoch, batches)
        for epoch in range(cfg["train"]["epochs"]):
            epoch_batches = batches[epoch * per_epoch : (epoch + 1) * per_epoch]
            correct = sum((torch.sign(out.flatten()) == y).sum().item() for _, out, y in epoch_batches)
            row = log.iloc[epoch + 1]
            assert row["train_loss"] == pytest.approx(np.mean([b[0] for b in epoch_batches]), abs=1e-5)
            assert row["train_acc"] == pytest.approx(correct / n, abs=1.5 / n)  # a sign may round


def test_checkpoints_carry_their_log_rows_and_resume_states_follow_resume_every(
    tmp_path, monkeypatch, config
):
    import latentstates.runs.train as train_module

    written = []
    real = train_module.save_resume
    monkeypatch.setattr(train_module, "save_resume", lambda d, i, p: (written.append(i), real(d, i, p)))
    cfg = config()["tasks"]["sparse_parity"]
    cfg["train"]["epochs"] = 6
    every = train_group(
        TaskSpec.from_dict(cfg), [0, 1], [tmp_path / "a0", tmp_path / "a1"], progress=False, resume_every=0
    )
    assert sorted(written) == sorted(2 * every[0]["checkpoint"].tolist())  # both runs, each checkpoint
    written.clear()
    never = train_group(
        TaskSpec.from_dict(cfg), [0, 1], [tmp_path / "b0", tmp_path / "b1"], progress=False, resume_every=1e9
    )
    assert written == []
    for a, b in zip(every, never):  # resume states change no output
        pd.testing.assert_frame_equal(a, b)
    rows = every[1].to_dict("records")
    for path, expected in zip(list_checkpoints(tmp_path / "a1"), rows, strict=True):
        row = load_checkpoint(path)["row"]
        assert row == {k: expected[k] for k in row}


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_steps_bit_for_bit_as_torchs_default_sgd(momentum):
    from latentstates.runs.train import make_optimizer

    required = {"batch_size": 0, "epochs": 1, "checkpoint_every": 1}  # unused here
    cfg = TrainSettings.defaults(optimizer="sgd", lr=0.1, weight_decay=0.01, momentum=momentum, **required)
    gen = torch.Generator().manual_seed(0)
    # Sizes that leave remainders past the vector width (5·30, 7).
    start = [
        torch.randn(5, 30, 4, generator=gen),
        torch.randn(5, 30, generator=gen),
        torch.randn(7, generator=gen),
    ]
    ours = [p.clone().requires_grad_() for p in start]
    default = [p.clone().requires_grad_() for p in start]
    opts = make_optimizer(ours, cfg), torch.optim.SGD(default, lr=0.1, weight_decay=0.01, momentum=momentum)
    for _ in range(20):
        grads = [torch.randn(p.shape, generator=gen) for p in start]
        for params, opt in zip((ours, default), opts):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(ours, default))
    assert bool(opts[0].param_groups[0]["fused"]) == (momentum == 0)  # without momentum: fused
