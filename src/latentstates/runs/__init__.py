"""Runs: the run contract, checkpoints, training, and runs from elsewhere.

Modules:
    contract         one directory per run (run.json, the performance log, the checkpoints)
    checkpoints      one weights-only file per checkpoint index, written atomically
    train            a seed group of one task trained together, a checkpoint every interval
    runtime          seeds, building a run and evaluating it, for the stages that run a model
    writer           runs written from the user's own training loop (`RunWriter`)
    callbacks        a Hugging Face Trainer callback that writes runs (`LatentStatesCallback`)
    lightning_callback  a PyTorch Lightning callback that writes runs (`LatentStatesLightning`)
    sources          runs trained elsewhere brought under the contract (checkpoint directories)
    discovery        where the checkpoints of runs trained elsewhere are, and their fingerprint
    weights          a checkpoint's state dict, whoever wrote it (torch files, safetensors, HF directories)
    architectures    the weights of a model trained elsewhere that the metrics read
    hub              checkpoint series on the Hugging Face Hub: a repository per seed, a revision per step
    hub_stream       a Hub series streamed on a bounded disk: download, measure, evict, a ledger for resume
    external_tables  metrics and performance tables that users bring (CSV, Parquet)
    trackers         runs logged to an experiment tracker (TensorBoard) read as a metrics table
    evaluations      lm-evaluation-harness results (the PolyPythias evaluations) as a performance table
"""

from latentstates._lazy import exports

__all__, __getattr__, __dir__ = exports(
    __name__,
    {
        "RunWriter": ".writer",
        "LatentStatesCallback": ".callbacks",
        "LatentStatesLightning": ".lightning_callback",
        "train_group": ".train",
        "read_table": ".external_tables",
        "metrics_table": ".external_tables",
    },
)
