"""Runs written by the PyTorch Lightning callback (runs.lightning_callback) from a real Lightning
Trainer: the checkpoints and logged metrics at the right steps, and three seeds through the
whole workflow as `source: runs`."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from conftest import small_config, snakemake
from latentstates.runs.contract import read_run

L = pytest.importorskip("lightning.pytorch")


class Classifier(L.LightningModule):
    """An MLP learning which of 4 random directions each random point lies furthest along (a
    linearly separable labelling): the validation accuracy rises from chance to ~1."""

    def __init__(self, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(64, 8, generator=g)
        self.y = (self.x @ torch.randn(8, 4, generator=g)).argmax(-1)
        # numbered layers (`layers.N.`), as architecture auto reads them
        self.layers = torch.nn.ModuleList([torch.nn.Linear(8, 32), torch.nn.Linear(32, 4)])

    def net(self, x):
        return self.layers[1](torch.relu(self.layers[0](x)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", torch.nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(-1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=2e-2)

    def loader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(self.x, self.y), batch_size=16)


def train(directory, seed: int, epochs: int = 15) -> None:
    from latentstates.runs.lightning_callback import LatentStatesLightning

    L.seed_everything(seed, verbose=False)
    module = Classifier(seed)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        check_val_every_n_epoch=1,
        callbacks=[LatentStatesLightning(directory, seed=seed, every=4)],
    )
    trainer.fit(module, module.loader(), module.loader())


def test_a_module_the_architecture_cannot_read_stops_before_training(tmp_path):
    from latentstates.runs.lightning_callback import LatentStatesLightning

    module = Classifier(0)
    module.flat = torch.nn.Sequential(torch.nn.Linear(2, 2))
    callback = LatentStatesLightning(tmp_path / "run", seed=0, every=4, module="flat")
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    with pytest.raises(
        ValueError, match=r"architecture 'auto' finds no matrices in the module's weights.*layers\.N"
    ):
        trainer.fit(module, module.loader())
    assert not (tmp_path / "run" / "run.json").exists()


def test_a_lightning_run_has_a_checkpoint_every_n_steps_with_what_was_logged(tmp_path):
    train(tmp_path / "run", seed=0, epochs=3)  # 4 batches per epoch: steps 0, 4, 8, 12
    run = read_run(tmp_path / "run" / "run.json")
    assert [c["step"] for c in run["checkpoints"]] == [0, 4, 8, 12]
    assert run["source"] == "callback" and run["spec"]["architecture"] == "auto"
    log = pd.read_parquet(tmp_path / "run" / "train_log.parquet")
    assert log["train_loss"].iloc[1:].notna().all()  # logged at the training step of each checkpoint
    # validation at the end of each epoch (step 4, 8, 12): eval_loss and eval_acc; none at step 0
    assert log["eval_loss"].iloc[1:].notna().all() and pd.isna(log["eval_loss"].iloc[0])
    assert log["eval_acc"].between(0, 1).iloc[1:].all()


@pytest.mark.slow
def test_lightning_runs_go_through_the_workflow(make_workdir, tmp_path):
    for seed in range(3):
        train(tmp_path / f"seed{seed}", seed=seed)
    lit = {"source": "runs", "seeds": 3, "path": str(tmp_path / "seed{seed}"), "convergence_threshold": 0.9}
    config = small_config({"lit": lit}, seeds_per_job=3)
    wd = make_workdir(config)
    snakemake(wd)
    res = wd / "results" / "lit"
    metrics = pd.read_parquet(res / "metrics.parquet")
    assert metrics.groupby("seed").size().to_dict() == {0: 16, 1: 16, 2: 16}  # steps 0, 4, ..., 60
    assert metrics["l2"].notna().all() and metrics["eval_acc"].iloc[1:].notna().any()
    summary = json.loads((res / "analysis" / "summary.json").read_text())
    assert summary["n_runs"] == 3 and summary["n_converged"] == 3
    for fig in ("model_selection", "training_curves", "transition_graph", "convergence_regression"):
        assert (res / "figures" / f"{fig}.png").stat().st_size > 0
