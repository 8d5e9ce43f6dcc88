"""Runs written from the user's own training loop (runs.writer, the Trainer callback): the run
contract after every checkpoint, a real Hugging Face Trainer's runs through the workflow, and the
forecast of a run while its trainer still trains."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from conftest import small_config, snakemake
from latentstates.runs.contract import read_run, run_checkpoint_paths
from latentstates.runs.sources import import_written_run
from latentstates.runs.weights import load_weights
from latentstates.runs.writer import RunWriter
from latentstates.settings import TaskSpec

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # the Trainer needs it

VOCAB = 64
TRAINER = '''
import sys, time, torch, transformers
from latentstates.runs.callbacks import LatentStatesCallback

VOCAB = 64


class Tokens(torch.utils.data.Dataset):
    """Random token sequences: memorising them raises the accuracy on them from chance to ~1."""

    def __init__(self, seed):
        self.ids = torch.randint(0, VOCAB, (16, 12), generator=torch.Generator().manual_seed(seed))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def accuracy(p):
    predicted = p.predictions[:, :-1].argmax(-1)
    return {"accuracy": float((predicted == p.label_ids[:, 1:]).mean())}


class Slow(transformers.TrainerCallback):
    """Keeps a run training long enough to be read while it trains."""

    def __init__(self, pause):
        self.pause = pause

    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(self.pause)


def train(directory, seed, steps, pause=0.0):
    config = transformers.GPTNeoXConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=VOCAB
    )
    torch.manual_seed(seed)
    data = Tokens(seed)
    args = transformers.TrainingArguments(
        output_dir=f"{directory}/trainer", max_steps=steps, per_device_train_batch_size=8,
        learning_rate=1e-2, logging_steps=5, eval_strategy="steps", eval_steps=5,
        save_strategy="no", report_to=[], use_cpu=True, seed=seed, disable_tqdm=True,
    )
    callbacks = [LatentStatesCallback(f"{directory}/run", seed=seed, every=5), Slow(pause)]
    transformers.Trainer(
        model=transformers.GPTNeoXForCausalLM(config), args=args, train_dataset=data,
        eval_dataset=data, compute_metrics=accuracy, callbacks=callbacks,
    ).train()


if __name__ == "__main__":
    train(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
'''


def test_a_written_run_is_readable_after_every_checkpoint_and_resumes(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Module()  # numbered layers, as architecture auto reads them
    model.layers = torch.nn.ModuleList(
        [torch.nn.Sequential(torch.nn.Linear(4, 8)), torch.nn.Sequential(torch.nn.Linear(8, 2))]
    )
    writer = RunWriter(tmp_path / "run", seed=3, architecture="auto")
    for step in (0, 10, 20):
        writer.checkpoint(model, step)
        writer.log(step, loss=1.0 / (step + 1), eval_accuracy=step / 20, grad_norm=0.5)
        run = read_run(tmp_path / "run" / "run.json")
        assert [c["step"] for c in run["checkpoints"]][-1] == step  # whole after each checkpoint
        with torch.no_grad():
            model.layers[0][0].weight.add_(1.0)
    log = pd.read_parquet(tmp_path / "run" / "train_log.parquet")
    assert log["train_loss"].tolist() == [1.0, 1 / 11, 1 / 21] and log["eval_acc"].tolist() == [0.0, 0.5, 1.0]
    assert "grad_norm" in log and not log["diverged"].any()
    last = load_weights(run_checkpoint_paths(run, tmp_path / "run" / "run.json")[-1], "state_dict")
    torch.testing.assert_close(
        last["layers.0.0.weight"], model.layers[0][0].weight.detach() - 1.0, rtol=0, atol=1e-6
    )
    with pytest.raises(ValueError, match="not after the last"):
        writer.checkpoint(model, 20)
    # A training resumed in the same directory continues the run.
    again = RunWriter(tmp_path / "run", seed=3, architecture="auto")
    again.checkpoint(model, 30)
    assert [c["step"] for c in read_run(tmp_path / "run" / "run.json")["checkpoints"]] == [0, 10, 20, 30]
    # A checkpoint file written when the run was killed before run.json: not part of the run.
    (tmp_path / "run" / "checkpoints" / "step000000040.safetensors").write_bytes(b"half")
    run, log = import_written_run(TaskSpec(name="own", source="runs", path=str(tmp_path / "run")), 3)
    assert len(run["checkpoints"]) == len(log) == 4 and run["source"] == "callback"


def test_a_non_finite_loss_marks_the_run_diverged(tmp_path):
    writer = RunWriter(tmp_path / "run", seed=0)
    writer.checkpoint({"w": torch.ones(2, 2)}, 0)
    writer.log(0, loss=float("nan"))
    assert pd.read_parquet(tmp_path / "run" / "train_log.parquet")["diverged"].tolist() == [True]


@pytest.mark.slow
def test_trainer_runs_go_through_the_workflow_and_one_is_forecast_while_it_trains(make_workdir, tmp_path):
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    for seed in range(3):
        subprocess.run(
            [sys.executable, str(script), str(tmp_path / f"seed{seed}"), str(seed), "60", "0"],
            check=True,
            capture_output=True,
        )
    run = read_run(tmp_path / "seed1" / "run" / "run.json")
    assert [c["step"] for c in run["checkpoints"]] == list(range(0, 61, 5))
    assert run["spec"]["architecture"] == "gpt_neox" and run["spec"]["config"]["num_attention_heads"] == 4
    log = pd.read_parquet(tmp_path / "seed1" / "run" / "train_log.parquet")
    assert log["eval_acc"].iloc[1:].notna().all() and log["eval_acc"].iloc[-1] > 0.9  # memorised
    own = {
        "source": "runs",
        "seeds": 3,
        "path": str(tmp_path / "seed{seed}" / "run"),
        "convergence_threshold": 0.9,
    }
    config = small_config({"own": own}, seeds_per_job=3)
    wd = make_workdir(config)
    snakemake(wd)
    res = wd / "results" / "own"
    metrics = pd.read_parquet(res / "metrics.parquet")
    assert metrics.groupby("seed").size().to_dict() == {0: 13, 1: 13, 2: 13}
    assert metrics["eval_acc"].notna().sum() == 3 * 12 and metrics["hessian_top_eig"].isna().all()
    summary = json.loads((res / "analysis" / "summary.json").read_text())
    assert summary["n_runs"] == 3 and summary["n_converged"] == 3
    for fig in (
        "model_selection",
        "training_curves",
        "transition_graph",
        "convergence_regression",
        "forecast",
    ):
        assert (res / "figures" / f"{fig}.png").stat().st_size > 0

    # A fourth run, still training while the forecast reads it (the trainer is stopped at the end).
    trainer = subprocess.Popen([sys.executable, str(script), str(tmp_path / "live"), "7", "100000", "0.2"])
    try:
        run_file = tmp_path / "live" / "run" / "run.json"
        deadline = time.monotonic() + 600
        while not (run_file.exists() and len(read_run(run_file)["checkpoints"]) >= 4):
            assert time.monotonic() < deadline and trainer.poll() is None, (
                "the trainer wrote no 4 checkpoints"
            )
            time.sleep(0.5)
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "latentstates.forecast",
                str(res),
                str(tmp_path / "live" / "run"),
                "--config",
                str(wd / "config.yaml"),
                "--json",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert trainer.poll() is None  # it was still training
    finally:
        trainer.kill()
        trainer.wait()
    forecast = json.loads(out.stdout)
    assert forecast["t"] >= 4 and forecast["task"] == "own"
