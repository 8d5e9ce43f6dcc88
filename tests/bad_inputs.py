"""A generator of bad inputs: for every source a user can point the workflow at (checkpoint
directories in torch and safetensors formats, Hugging Face directories with their shard indexes
and configs, performance tables, run directories with run.json and train_log.parquet, metrics
tables, image data files), damaged, hand-edited or hostile versions of good files.

Each `Case` writes its input under its own directory, says which task of a config reads it, which
file the message must name and what it must say, and how to repair it. `tests/test_bad_inputs.py`
runs them all through the workflow (`snakemake <first consumer>`) and checks the message, that
nothing was published, and that a rerun after the repair succeeds.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

# A marker a hostile file tries to create: it must never exist.
PWNED = "PWNED"


@dataclass
class Base:
    """The good inputs every case starts from, made once: a tiny parity run's checkpoints, a
    BERT-like and a GPT-NeoX-like state dict, their steps."""

    parity: dict  # the parity task's settings (kind, data, model)
    parity_states: list[tuple[int, dict]]  # (step, state dict) of seed 0
    bert: dict[str, torch.Tensor]
    neox: dict[str, torch.Tensor]
    steps: tuple[int, ...] = (0, 10, 20)  # of the transformer series


@dataclass
class Case:
    name: str  # also the task's name
    category: str
    # Writes the bad input under the case's directory; returns the task's config.
    build: Callable[[Path, Base], dict]
    # The file (or directory) the message must name, from the case's directory.
    culprit: Callable[[Path], Path]
    expect: str  # what the message must say
    # Repairs the input (default: writes the good version over it).
    fix: Callable[[Path, Base], None] | None = None
    rule: str = "import"  # the job that reads it: import, import_table or train
    hostile: bool = False  # tries to create PWNED in its directory
    notes: dict = field(default_factory=dict)


def make_base(root: Path) -> Base:
    """Train the tiny parity run (seed 0, three checkpoints) and draw the transformer weights."""
    from latentstates.config import validate_config
    from latentstates.runs.checkpoints import list_checkpoints, load_checkpoint
    from latentstates.runs.train import train_run
    from latentstates.settings import TaskSpec

    parity = {
        "kind": "sparse_parity",
        "data": {"n_bits": 8, "k": 2, "n_train": 32, "n_test": 16},
        "model": {"hidden": [8]},
    }
    train = {"optimizer": "sgd", "lr": 0.1, "batch_size": 16, "epochs": 2, "checkpoint_every": 1}
    task = validate_config({"tasks": {"parity": {**parity, "seeds": 1, "train": train}}})["tasks"]["parity"]
    train_run(TaskSpec.from_dict(task), 0, root / "parity", progress=False)
    states = []
    for path in list_checkpoints(root / "parity"):
        payload = load_checkpoint(path)
        states.append((int(payload["step"]), {k: v.clone() for k, v in payload["model"].items()}))
    g = torch.Generator().manual_seed(0)
    h, i = 8, 12
    bert = {}
    for layer in range(2):
        pre = f"bert.encoder.layer.{layer}."
        for part, shape in (
            ("attention.self.query", (h, h)),
            ("attention.self.key", (h, h)),
            ("attention.self.value", (h, h)),
            ("attention.output.dense", (h, h)),
            ("intermediate.dense", (i, h)),
            ("output.dense", (h, i)),
        ):
            bert[pre + part + ".weight"] = torch.randn(shape, generator=g)
            bert[pre + part + ".bias"] = torch.randn(shape[0], generator=g)
    neox = {}
    for layer in range(2):
        pre = f"gpt_neox.layers.{layer}."
        for part, shape in (
            ("attention.query_key_value", (3 * h, h)),
            ("attention.dense", (h, h)),
            ("mlp.dense_h_to_4h", (4 * h, h)),
            ("mlp.dense_4h_to_h", (h, 4 * h)),
        ):
            neox[pre + part + ".weight"] = torch.randn(shape, generator=g)
            neox[pre + part + ".bias"] = torch.randn(shape[0], generator=g)
    return Base(parity, states, bert, neox)


# ---- writers of good and damaged files ---------------------------------------------------------


def raw_safetensors(path: Path, header: object, data: bytes) -> None:
    """A safetensors file from its parts, whatever they say."""
    text = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def layout(sd: dict[str, torch.Tensor]) -> tuple[dict, bytes]:
    """The header and data of a state dict as safetensors stores them (float32)."""
    header, data, offset = {}, b"", 0
    for name, t in sd.items():
        raw = t.to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        data += raw
        offset += len(raw)
    return header, data


class Hostile:
    """Pickled, it runs a shell command that creates PWNED in `directory`."""

    def __init__(self, directory: Path):
        self.directory = directory

    def __reduce__(self):
        return (os.system, (f"touch {self.directory / PWNED}",))


def parity_run(d: Path, base: Base, fmt: str = "safetensors") -> None:
    """The good parity run in `d`: one file per checkpoint, step in the name."""
    d.mkdir(parents=True, exist_ok=True)
    for step, sd in base.parity_states:
        if fmt == "safetensors":
            save_file(sd, str(d / f"step_{step}.safetensors"))
        else:
            torch.save(sd, d / f"step_{step}.pt")


def ckpt_task(root: Path, base: Base) -> dict:
    return {**base.parity, "source": "checkpoints", "seeds": 1, "path": str(root / "run{seed}")}


def hf_series(root: Path, base: Base, arch: str = "bert") -> None:
    """The good Hugging Face series of seed 0: model.safetensors and config.json per step."""
    sd = base.bert if arch == "bert" else base.neox
    config = {"model_type": arch, "num_attention_heads": 2, "hidden_size": 8}
    for step in base.steps:
        d = hf_dir(root, step)
        d.mkdir(parents=True, exist_ok=True)
        save_file({k: v + step for k, v in sd.items()}, str(d / "model.safetensors"))
        (d / "config.json").write_text(json.dumps(config))


def hf_dir(root: Path, step: int) -> Path:
    return root / "seed_0" / f"step_{step}"


def hf_task(root: Path, arch: str = "bert", performance: bool = False) -> dict:
    task = {
        "source": "huggingface",
        "architecture": arch,
        "seeds": 1,
        "path": str(root / "seed_{seed}" / "step_{step}"),
    }
    if performance:
        task["performance"] = str(root / "performance.csv")
    return task


def performance_table(base: Base) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "seed": 0,
            "step": list(base.steps),
            "eval_loss": [2.0, 1.0, 0.5],
            "eval_acc": [0.1, 0.5, 0.9],
        }
    )


def written_run(d: Path, base: Base) -> None:
    """The good run directory of seed 0, written as a training loop writes it."""
    from latentstates.runs.writer import RunWriter

    writer = RunWriter(d, seed=0, architecture="bert")
    for i, step in enumerate(base.steps):
        writer.checkpoint({k: v + i for k, v in base.bert.items()}, step)
        writer.log(step, loss=1.0 / (i + 1), eval_accuracy=0.3 * i)


def runs_task(root: Path) -> dict:
    return {"source": "runs", "seeds": 1, "path": str(root / "run{seed}")}


def edit_json(path: Path, change: Callable[[dict], object]) -> None:
    """Change a JSON file's content in place."""
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))


def edit_log(path: Path, change: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    change(pd.read_parquet(path)).to_parquet(path, index=False)


def metrics_csv(path: Path, n_runs: int = 4, length: int = 12) -> pd.DataFrame:
    """A good metrics table: runs that switch regime halfway, with an accuracy that rises."""
    rng = np.random.default_rng(0)
    rows = []
    for r in range(n_runs):
        for t in range(length):
            after = t >= length // 2
            rows.append(
                {
                    "run": f"job-{r}",
                    "step": 10 * t,
                    "grad_norm": (3.0 if after else 0.0) + rng.normal(0, 0.3),
                    "weight_norm": (1.0 if after else -1.0) + rng.normal(0, 0.3),
                    "eval_acc": 0.95 if after else 0.1,
                }
            )
    df = pd.DataFrame(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return df


def table_task(root: Path, **extra) -> dict:
    return {"source": "table", "path": str(root / "table.csv"), **extra}


def write_idx(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def mnist_files(root: Path) -> None:
    from latentstates.tasks import image_data

    rng = np.random.default_rng(0)
    for split, n in (("train", 16), ("test", 8)):
        images, labels = image_data.MNIST_FILES[split]
        write_idx(image_data.mnist_dir(root) / images, rng.integers(0, 256, (n, 28, 28)))
        write_idx(image_data.mnist_dir(root) / labels, rng.integers(0, 10, n))


def cifar_files(root: Path) -> None:
    from latentstates.tasks import image_data

    rng = np.random.default_rng(0)
    d = image_data.cifar100_dir(root)
    d.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 8), ("test", 4)):
        fine = rng.integers(0, 100, n).tolist()
        entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "fine_labels": fine}
        (d / split).write_bytes(pickle.dumps(entry, protocol=2))


IMAGE_TRAIN = {"optimizer": "sgd", "lr": 0.01, "batch_size": 8, "epochs": 1, "checkpoint_every": 1}


def mnist_task(root: Path) -> dict:
    return {
        "kind": "mnist_mlp",
        "seeds": 1,
        "data": {"dir": str(root)},
        "model": {"hidden": [8]},
        "train": IMAGE_TRAIN,
    }


def cifar_task(root: Path) -> dict:
    return {
        "kind": "cifar100_resnet18",
        "seeds": 1,
        "data": {"dir": str(root)},
        "model": {"batch_norm": True, "residual": True},
        "train": {**IMAGE_TRAIN, "train_metrics": "running"},
    }


# ---- the cases -------------------------------------------------------------------------------

CASES: list[Case] = []


def case(name: str, category: str, culprit: Callable[[Path], Path], expect: str, **kw):
    """Register the decorated builder as a case."""

    def register(build: Callable[[Path, Base], dict]) -> Callable[[Path, Base], dict]:
        CASES.append(Case(name, category, build, culprit, expect, **kw))
        return build

    return register


def _fix_parity(fmt: str = "safetensors") -> Callable[[Path, Base], None]:
    def fix(root: Path, base: Base) -> None:
        d = root / "run0"
        for p in list(d.iterdir()):
            p.unlink()
        parity_run(d, base, fmt)

    return fix


def _first_ckpt(root: Path) -> Path:
    return root / "run0" / "step_0.safetensors"


def _damaged_parity(change: Callable[[dict, bytes], tuple[object, bytes]]):
    """A parity run whose first checkpoint's header and data are changed by `change`."""

    def build(root: Path, base: Base) -> dict:
        parity_run(root / "run0", base)
        header, data = layout(base.parity_states[0][1])
        header, data = change(header, data)
        raw_safetensors(_first_ckpt(root), header, data)
        return ckpt_task(root, base)

    return build


def _overlap(header: dict, data: bytes):
    names = list(header)
    header[names[1]]["data_offsets"] = [
        0,
        header[names[1]]["data_offsets"][1] - header[names[1]]["data_offsets"][0],
    ]
    return header, data


def _retyped(dtype: str):
    def change(header: dict, data: bytes):
        header[next(iter(header))]["dtype"] = dtype
        return header, data

    return change


def _first_entry(update: Callable[[dict], None]):
    def change(header: dict, data: bytes):
        update(header[next(iter(header))])
        return header, data

    return change


def _int_weights(header: dict, data: bytes):
    """The first tensor as int32 (the same byte size): integer weights."""
    header[next(iter(header))]["dtype"] = "I32"
    return header, data


for _name, _change, _expect in [
    ("st_overlapping_offsets", _overlap, "overlap"),
    ("st_unknown_dtype", _retyped("F99"), "unknown dtype 'F99'"),
    ("st_integer_weights", _int_weights, "integer or boolean weights are refused"),
    (
        "st_reversed_offsets",
        _first_entry(lambda e: e.update(data_offsets=e["data_offsets"][::-1])),
        "byte range",
    ),
    (
        "st_negative_shape",
        _first_entry(lambda e: e.update(shape=[-e["shape"][0], *e["shape"][1:]])),
        "non-negative",
    ),
    ("st_shape_not_a_list", _first_entry(lambda e: e.update(shape="8x8")), "non-negative integers"),
    (
        "st_size_not_shape",
        _first_entry(lambda e: e.update(shape=[e["shape"][0] + 1, *e["shape"][1:]])),
        "needs",
    ),
    (
        "st_zero_bytes_for_a_shape",
        _first_entry(lambda e: e.update(data_offsets=[e["data_offsets"][0]] * 2)),
        "hold 0",
    ),
    ("st_header_is_a_list", lambda h, d: (list(h), d), "not a mapping"),
    ("st_bytes_of_no_tensor", lambda h, d: (h, d + b"\0" * 16), "hold"),
    ("st_truncated", lambda h, d: (h, d[: len(d) // 2]), "truncated"),
]:
    case(f"ckpt_{_name}", "checkpoint files", _first_ckpt, _expect, fix=_fix_parity())(
        _damaged_parity(_change)
    )


@case("ckpt_st_declared_huge", "checkpoint files", _first_ckpt, "hold 1600000000 bytes", fix=_fix_parity())
def _declared_huge(root: Path, base: Base) -> dict:
    """A 103-byte file that declares a 20000 x 20000 matrix."""
    parity_run(root / "run0", base)
    header = {"w": {"dtype": "F32", "shape": [20000, 20000], "data_offsets": [0, 1_600_000_000]}}
    raw_safetensors(_first_ckpt(root), header, b"\0" * 30)
    return ckpt_task(root, base)


@case(
    "ckpt_st_too_large_for_memory",
    "checkpoint files",
    _first_ckpt,
    "more than this machine",
    fix=_fix_parity(),
)
def _sparse_huge(root: Path, base: Base) -> dict:
    """A consistent file (sparse on disk) of one 300000 x 300000 float32 matrix: 360 GB."""
    parity_run(root / "run0", base)
    n = 300_000 * 300_000 * 4
    raw_safetensors(
        _first_ckpt(root), {"w": {"dtype": "F32", "shape": [300_000, 300_000], "data_offsets": [0, n]}}, b""
    )
    with open(_first_ckpt(root), "r+b") as f:
        f.truncate(f.seek(0, os.SEEK_END) + n)
    return ckpt_task(root, base)


@case("ckpt_st_header_not_json", "checkpoint files", _first_ckpt, "not JSON", fix=_fix_parity())
def _not_json(root: Path, base: Base) -> dict:
    parity_run(root / "run0", base)
    text = b"{this is not json}"
    _first_ckpt(root).write_bytes(struct.pack("<Q", len(text)) + text)
    return ckpt_task(root, base)


def _pt_case(name: str, expect: str, write: Callable[[Path, Base], None], hostile: bool = False) -> None:
    """A parity run of torch files whose first checkpoint `write` replaces."""

    def build(root: Path, base: Base) -> dict:
        parity_run(root / "run0", base, "pt")
        write(root / "run0" / "step_0.pt", base)
        return ckpt_task(root, base)

    culprit = lambda r: r / "run0" / "step_0.pt"  # noqa: E731
    case(f"ckpt_pt_{name}", "checkpoint files", culprit, expect, fix=_fix_parity("pt"), hostile=hostile)(
        build
    )


def _bool_weights(path: Path, base: Base) -> None:
    sd = dict(base.parity_states[0][1])
    name = next(iter(sd))
    sd[name] = sd[name] > 0
    torch.save(sd, path)


_pt_case("boolean_weights", "integer or boolean weights", _bool_weights)
_pt_case(
    "hostile_pickle",
    "could run code",
    lambda path, base: torch.save({**base.parity_states[0][1], "extra": Hostile(path.parents[1])}, path),
    hostile=True,
)
_pt_case(
    "garbage", "not a readable checkpoint", lambda path, base: path.write_bytes(b"these are not weights")
)


@case(
    "ckpt_wrong_model", "checkpoint files", _first_ckpt, "do not fit the configured model", fix=_fix_parity()
)
def _wrong_model(root: Path, base: Base) -> dict:
    parity_run(root / "run0", base)
    sd = {k: torch.cat([v, v[:1]]) if v.ndim else v for k, v in base.parity_states[0][1].items()}
    save_file(sd, str(_first_ckpt(root)))
    return ckpt_task(root, base)


@case(
    "ckpt_broken_symlink", "checkpoint files", lambda r: r / "run0", "broken symbolic link", fix=_fix_parity()
)
def _broken_link(root: Path, base: Base) -> dict:
    parity_run(root / "run0", base)
    (root / "run0" / "step_5.safetensors").symlink_to(root / "gone.safetensors")
    return ckpt_task(root, base)


@case(
    "ckpt_step_past_int64",
    "checkpoint files",
    lambda r: r / "run0" / "step_99999999999999999999.safetensors",
    "outside [0, 2^63)",
    fix=_fix_parity(),
)
def _huge_step(root: Path, base: Base) -> dict:
    parity_run(root / "run0", base)
    save_file(base.parity_states[-1][1], str(root / "run0" / "step_99999999999999999999.safetensors"))
    return ckpt_task(root, base)


@case("ckpt_no_files", "checkpoint files", lambda r: r / "run0", "no checkpoint files", fix=_fix_parity())
def _no_files(root: Path, base: Base) -> dict:
    (root / "run0").mkdir(parents=True)
    (root / "run0" / "notes.txt").write_text("the checkpoints are elsewhere")
    return ckpt_task(root, base)


def _fix_stored_steps(root: Path, base: Base) -> None:
    for i, (step, sd) in enumerate(base.parity_states):
        torch.save({"model": sd, "step": step}, root / "run0" / f"final-{'abc'[i]}.pt")


@case(
    "ckpt_stored_step_is_text",
    "checkpoint files",
    lambda r: r / "run0" / "final-a.pt",
    "a step must be an integer",
    fix=_fix_stored_steps,
)
def _stored_step_text(root: Path, base: Base) -> dict:
    (root / "run0").mkdir(parents=True)
    _fix_stored_steps(root, base)
    torch.save({"model": base.parity_states[0][1], "step": "0"}, root / "run0" / "final-a.pt")
    return ckpt_task(root, base)


# Hugging Face directories.


def _fix_hf(arch: str = "bert") -> Callable[[Path, Base], None]:
    def fix(root: Path, base: Base) -> None:
        for step in base.steps:
            for p in list(hf_dir(root, step).iterdir()):
                p.unlink()
        hf_series(root, base, arch)

    return fix


def _hf_file(name: str, step: int = 10) -> Callable[[Path], Path]:
    return lambda root: hf_dir(root, step) / name


def _sharded(root: Path, base: Base, weight_map: object) -> None:
    """Step 10 of the series as two shards and an index with `weight_map`."""
    d = hf_dir(root, 10)
    (d / "model.safetensors").unlink()
    keys = sorted(base.bert)
    halves = {"model-1-of-2.safetensors": keys[::2], "model-2-of-2.safetensors": keys[1::2]}
    for name, part in halves.items():
        save_file({k: base.bert[k] for k in part}, str(d / name))
    good = {k: n for n, part in halves.items() for k in part}
    index = {"metadata": {}, "weight_map": weight_map(good) if callable(weight_map) else weight_map}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))


def _hf_case(name: str, culprit: str, expect: str, arch: str = "bert", **kw):
    def register(damage: Callable[[Path, Base], None]):
        def build(root: Path, base: Base) -> dict:
            hf_series(root, base, arch)
            damage(root, base)
            return hf_task(root, arch)

        case(f"hf_{name}", "Hugging Face directories", _hf_file(culprit), expect, fix=_fix_hf(arch), **kw)(
            build
        )
        return damage

    return register


@_hf_case("index_weight_map_is_a_list", "model.safetensors.index.json", "weight_map: must map tensor names")
def _index_list(root: Path, base: Base) -> None:
    _sharded(root, base, lambda good: sorted(set(good.values())))


@_hf_case("index_shard_outside", "model.safetensors.index.json", "outside the checkpoint's directory")
def _index_outside(root: Path, base: Base) -> None:
    save_file(base.bert, str(root / "elsewhere.safetensors"))
    _sharded(root, base, lambda good: {**good, next(iter(good)): "../../../elsewhere.safetensors"})


@_hf_case("index_missing_shard", "model-2-of-2.safetensors", "no such file")
def _index_missing(root: Path, base: Base) -> None:
    _sharded(root, base, lambda good: good)
    (hf_dir(root, 10) / "model-2-of-2.safetensors").unlink()


@_hf_case(
    "config_heads_text", "config.json", "num_attention_heads: must be a positive integer", arch="gpt_neox"
)
def _heads_text(root: Path, base: Base) -> None:
    edit_json(hf_dir(root, 10) / "config.json", lambda c: c.update(num_attention_heads="2"))


@_hf_case(
    "config_heads_negative", "config.json", "num_attention_heads: must be a positive integer", arch="gpt_neox"
)
def _heads_negative(root: Path, base: Base) -> None:
    edit_json(hf_dir(root, 10) / "config.json", lambda c: c.update(num_attention_heads=-2))


@_hf_case("config_not_json", "config.json", "not a readable model config", arch="gpt_neox")
def _config_garbage(root: Path, base: Base) -> None:
    (hf_dir(root, 10) / "config.json").write_text("{num_attention_heads: 2")


@_hf_case("config_is_a_list", "config.json", "a model config must be a mapping", arch="gpt_neox")
def _config_list(root: Path, base: Base) -> None:
    (hf_dir(root, 10) / "config.json").write_text("[2, 8]")


@_hf_case("missing_layer_weight", "", "has no attention.self.value.weight")
def _missing_value(root: Path, base: Base) -> None:
    sd = {k: v for k, v in base.bert.items() if "layer.1.attention.self.value.weight" not in k}
    save_file(sd, str(hf_dir(root, 10) / "model.safetensors"))


@_hf_case("integer_matrix", "", "integer or boolean weights are refused")
def _int_matrix(root: Path, base: Base) -> None:
    sd = dict(base.bert)
    sd["bert.encoder.layer.0.attention.self.query.weight"] = torch.ones(8, 8, dtype=torch.int64)
    save_file(sd, str(hf_dir(root, 10) / "model.safetensors"))


@_hf_case("matrix_of_rank_one", "", "not a matrix")
def _vector_matrix(root: Path, base: Base) -> None:
    sd = dict(base.bert)
    sd["bert.encoder.layer.0.attention.self.query.weight"] = torch.ones(64)
    save_file(sd, str(hf_dir(root, 10) / "model.safetensors"))


@_hf_case("truncated_weights", "model.safetensors", "truncated")
def _hf_truncated(root: Path, base: Base) -> None:
    p = hf_dir(root, 10) / "model.safetensors"
    p.write_bytes(p.read_bytes()[:-100])


@_hf_case("no_weights", "", "no model.safetensors or pytorch_model.bin")
def _hf_no_weights(root: Path, base: Base) -> None:
    (hf_dir(root, 10) / "model.safetensors").unlink()


@_hf_case("hostile_pytorch_bin", "pytorch_model.bin", "could run code", hostile=True)
def _hf_hostile(root: Path, base: Base) -> None:
    (hf_dir(root, 10) / "model.safetensors").unlink()
    torch.save({**base.bert, "x": Hostile(root)}, hf_dir(root, 10) / "pytorch_model.bin")


# Performance tables of a Hugging Face series.


def _perf_case(name: str, expect: str, damage: Callable[[pd.DataFrame], pd.DataFrame | str]):
    def build(root: Path, base: Base) -> dict:
        hf_series(root, base)
        bad = damage(performance_table(base))
        if isinstance(bad, str):
            (root / "performance.csv").write_text(bad)
        else:
            bad.to_csv(root / "performance.csv", index=False)
        return hf_task(root, performance=True)

    def fix(root: Path, base: Base) -> None:
        performance_table(base).to_csv(root / "performance.csv", index=False)

    case(f"perf_{name}", "performance tables", lambda r: r / "performance.csv", expect, fix=fix)(build)


_perf_case("seeds_match_no_run", "no row for seed 0", lambda t: t.assign(seed=7))
_perf_case(
    "steps_match_no_checkpoint",
    "no row of seed 0 is at one of its checkpoints' steps",
    lambda t: t.assign(step=t.step + 5),
)
_perf_case("accuracy_in_percent", "not an accuracy in [0, 1]", lambda t: t.assign(eval_acc=t.eval_acc * 100))
_perf_case("text_in_a_loss", "'oops' is not a number", lambda t: t.assign(eval_loss=["2.0", "oops", "0.5"]))
_perf_case("duplicate_step", "more than one row for step", lambda t: pd.concat([t, t.iloc[[1]]]))
_perf_case("no_step_column", "missing column(s) ['step']", lambda t: t.drop(columns="step"))
_perf_case("header_only", "has no rows", lambda t: t.iloc[:0])
_perf_case("fractional_seed", "is not an integer", lambda t: t.assign(seed=0.5))


# Run directories written from a training loop.


def _fix_runs(root: Path, base: Base) -> None:
    d = root / "run0"
    for p in sorted(d.rglob("*"), reverse=True):
        p.unlink() if p.is_file() or p.is_symlink() else p.rmdir()
    written_run(d, base)


def _runs_case(name: str, culprit: str, expect: str, **kw):
    def register(damage: Callable[[Path, Base], None]):
        def build(root: Path, base: Base) -> dict:
            written_run(root / "run0", base)
            damage(root / "run0", base)
            return runs_task(root)

        case(f"runs_{name}", "run directories", lambda r: r / "run0" / culprit, expect, fix=_fix_runs, **kw)(
            build
        )
        return damage

    return register


def _run_json(change: Callable[[dict], object]) -> Callable[[Path, Base], None]:
    return lambda d, base: edit_json(d / "run.json", change)


def _log(change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path, Base], None]:
    return lambda d, base: edit_log(d / "train_log.parquet", change)


def _checkpoint(i: int, **values) -> Callable[[dict], None]:
    return lambda run: run["checkpoints"][i].update(values)


for _name, _culprit, _expect, _damage in [
    (
        "steps_as_text",
        "run.json",
        "checkpoints[0].step: a step must be an integer, got '0'",
        _run_json(lambda r: [c.update(step=str(c["step"])) for c in r["checkpoints"]]),
    ),
    ("steps_decrease", "run.json", "steps must increase", _run_json(_checkpoint(2, step=5))),
    (
        "checkpoints_is_text",
        "run.json",
        "checkpoints: must be a list",
        _run_json(lambda r: r.update(checkpoints="all")),
    ),
    ("spec_is_text", "run.json", "spec: must be a mapping", _run_json(lambda r: r.update(spec="bert"))),
    (
        "checkpoint_without_path",
        "run.json",
        "checkpoints[1]: lacks ['path']",
        _run_json(lambda r: r["checkpoints"][1].pop("path")),
    ),
    (
        "kind_spec_without_data_seed",
        "run.json",
        "lacks ['data_seed']",
        _run_json(lambda r: r.update(spec={"kind": "sparse_parity", "data": {}, "model": {}})),
    ),
    (
        "kind_spec_with_bad_model",
        "run.json",
        "spec: invalid key 'model.hidden'",
        _run_json(
            lambda r: r.update(
                spec={
                    "kind": "sparse_parity",
                    "data": {"n_bits": 8, "k": 2, "n_train": 4, "n_test": 4},
                    "model": {"hidden": "wide"},
                    "data_seed": None,
                }
            )
        ),
    ),
    (
        "unknown_format",
        "run.json",
        "format: unknown checkpoint format 'pickle'",
        _run_json(lambda r: r.update(format="pickle")),
    ),
    (
        "unknown_architecture",
        "run.json",
        "unknown architecture 'resnet'",
        _run_json(lambda r: r["spec"].update(architecture="resnet")),
    ),
    (
        "seed_is_text",
        "run.json",
        "seed: must be a non-negative integer",
        _run_json(lambda r: r.update(seed="0")),
    ),
    (
        "epoch_is_text",
        "run.json",
        "checkpoints[0].epoch: must be a number",
        _run_json(_checkpoint(0, epoch="one")),
    ),
    (
        "missing_checkpoint_file",
        "run.json",
        "checkpoints[2].path: checkpoint",
        lambda d, b: next((d / "checkpoints").glob("step000000020*")).unlink(),
    ),
    (
        "log_without_checkpoint_column",
        "train_log.parquet",
        "no 'checkpoint' column",
        _log(lambda t: t.drop(columns="checkpoint")),
    ),
    (
        "log_duplicate_rows",
        "train_log.parquet",
        "more than one row for checkpoint",
        _log(lambda t: pd.concat([t, t.iloc[[1]]])),
    ),
    (
        "log_checkpoints_as_text",
        "train_log.parquet",
        "must hold integers",
        _log(lambda t: t.assign(checkpoint=t.checkpoint.astype(str))),
    ),
    (
        "log_steps_contradict_run",
        "train_log.parquet",
        "checkpoint 1 is at step 11 here and at step 10 in run.json",
        _log(lambda t: t.assign(step=t.step + (t.checkpoint == 1))),
    ),
    (
        "log_diverged_missing",
        "train_log.parquet",
        "is not true or false",
        _log(lambda t: t.assign(diverged=[False, None, False])),
    ),
    (
        "log_losses_as_text",
        "train_log.parquet",
        "'1.0' is not a number",
        _log(lambda t: t.assign(train_loss=t.train_loss.astype(str))),
    ),
    (
        "log_accuracy_out_of_range",
        "train_log.parquet",
        "not an accuracy in [0, 1]",
        _log(lambda t: t.assign(eval_acc=[-3.0, 7.5, 40.0])),
    ),
    (
        "log_lacks_a_checkpoint",
        "train_log.parquet",
        "no row for checkpoint(s) [2]",
        _log(lambda t: t.iloc[:2]),
    ),
]:
    _runs_case(_name, _culprit, _expect)(_damage)


@_runs_case("run_json_not_json", "run.json", "not a readable run record")
def _run_not_json(d: Path, base: Base) -> None:
    (d / "run.json").write_text('{"task": "x", ')


@_runs_case("record_is_a_list", "run.json", "a run record is a mapping")
def _record_list(d: Path, base: Base) -> None:
    (d / "run.json").write_text(json.dumps([json.loads((d / "run.json").read_text())]))


@_runs_case("log_not_parquet", "train_log.parquet", "not a readable Parquet file")
def _log_garbage(d: Path, base: Base) -> None:
    (d / "train_log.parquet").write_text("step,loss\n0,1.0\n")


# Metrics tables.


def _table_case(
    name: str,
    expect: str,
    damage: Callable[[pd.DataFrame], pd.DataFrame | str],
    repair: Callable[[pd.DataFrame], pd.DataFrame] = lambda t: t,
    **task,
):
    """A metrics table case: the good table changed by `damage`; `repair` makes the good table
    fit the task's settings where the config asks for more than it has."""

    def build(root: Path, base: Base) -> dict:
        good = metrics_csv(root / "table.csv")
        bad = damage(good)
        if isinstance(bad, str):
            (root / "table.csv").write_text(bad)
        else:
            bad.to_csv(root / "table.csv", index=False)
        return table_task(root, **task)

    def fix(root: Path, base: Base) -> None:
        repair(metrics_csv(root / "table.csv")).to_csv(root / "table.csv", index=False)

    case(f"table_{name}", "metrics tables", lambda r: r / "table.csv", expect, fix=fix, rule="import_table")(
        build
    )


def _cell(column: str, row: int, value):
    def change(t: pd.DataFrame) -> pd.DataFrame:
        t = t.astype({column: object})
        t.loc[row, column] = value
        return t

    return change


_table_case("step_as_text", "column 'step', line 5: 'thirty' is not a number", _cell("step", 3, "thirty"))
_table_case("step_empty", "column 'step', line 5: is empty", _cell("step", 3, None))
_table_case(
    "text_in_a_feature", "column 'grad_norm', line 7: 'oops' is not a number", _cell("grad_norm", 5, "oops")
)
_table_case(
    "empty_feature_cell",
    "column 'weight_norm', line 7: nan is not a finite number",
    _cell("weight_norm", 5, None),
)
_table_case(
    "infinite_feature",
    "column 'grad_norm', line 3: inf is not a finite number",
    _cell("grad_norm", 1, np.inf),
)
_table_case("accuracy_in_percent", "not an accuracy in [0, 1]", lambda t: t.assign(eval_acc=t.eval_acc * 100))
_table_case(
    "negative_accuracy", "column 'eval_acc', line 2: -3.0 is not an accuracy", _cell("eval_acc", 0, -3.0)
)
_table_case("header_only", "has no rows", lambda t: t.iloc[:0])
_table_case("no_feature", "no feature column", lambda t: t[["run", "step", "eval_acc"]].assign(note="text"))
_table_case("run_label_missing", "column 'run', line 4: has no run label", _cell("run", 2, None))
_table_case(
    "duplicate_run_step", "more than one row for a (run, step) pair", lambda t: pd.concat([t, t.iloc[[4]]])
)
_table_case(
    "not_a_table", "not a readable table", lambda t: "run,step,loss\njob-0,0,1.5\njob-0,10,1.5,2.5,3.5\n"
)
_table_case("empty_file", "is empty", lambda t: "")
_table_case(
    "missing_feature",
    "missing column(s) ['lr']",
    lambda t: t,
    repair=lambda t: t.assign(lr=np.linspace(1.0, 0.1, len(t))),
    hmm={"features": ["grad_norm", "lr"]},
)


# Image data (read by the training job).


def _image_case(name: str, kind: str, culprit: Callable[[Path], Path], expect: str, **kw):
    writer = mnist_files if kind == "mnist" else cifar_files
    task = mnist_task if kind == "mnist" else cifar_task

    def register(damage: Callable[[Path], None]):
        def build(root: Path, base: Base) -> dict:
            writer(root)
            damage(root)
            return task(root)

        case(f"{kind}_{name}", "image data", culprit, expect, fix=lambda r, b: writer(r), rule="train", **kw)(
            build
        )
        return damage

    return register


def _cifar(split: str) -> Callable[[Path], Path]:
    from latentstates.tasks.image_data import cifar100_dir

    return lambda root: cifar100_dir(root) / split


def _mnist(name: str) -> Callable[[Path], Path]:
    from latentstates.tasks.image_data import mnist_dir

    return lambda root: mnist_dir(root) / name


@_image_case("hostile_pickle", "cifar", _cifar("train"), "asks for posix.system", hostile=True)
def _cifar_hostile(root: Path) -> None:
    _cifar("train")(root).write_bytes(pickle.dumps({"data": Hostile(root), "fine_labels": [1]}, protocol=2))


@_image_case("not_a_batch", "cifar", _cifar("test"), "a mapping with 'data' and 'fine_labels'")
def _cifar_structure(root: Path) -> None:
    _cifar("test")(root).write_bytes(pickle.dumps([1, 2, 3], protocol=2))


@_image_case("wrong_image_size", "cifar", _cifar("train"), "must be N x 3072 bytes")
def _cifar_size(root: Path) -> None:
    entry = {"data": np.zeros((8, 1024), dtype=np.uint8), "fine_labels": [0] * 8}
    _cifar("train")(root).write_bytes(pickle.dumps(entry, protocol=2))


@_image_case("label_out_of_range", "mnist", _mnist("train-labels-idx1-ubyte"), "label 12 of image 3")
def _mnist_label(root: Path) -> None:
    labels = np.zeros(16, dtype=np.uint8)
    labels[3] = 12
    write_idx(_mnist("train-labels-idx1-ubyte")(root), labels)


@_image_case("images_of_wrong_rank", "mnist", _mnist("t10k-images-idx3-ubyte"), "rank 2, where rank 3")
def _mnist_rank(root: Path) -> None:
    write_idx(_mnist("t10k-images-idx3-ubyte")(root), np.zeros((8, 784), dtype=np.uint8))


@_image_case("labels_for_fewer_images", "mnist", _mnist("t10k-labels-idx1-ubyte"), "7 labels for 8 images")
def _mnist_count(root: Path) -> None:
    write_idx(_mnist("t10k-labels-idx1-ubyte")(root), np.zeros(7, dtype=np.uint8))
