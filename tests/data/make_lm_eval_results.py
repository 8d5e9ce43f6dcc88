"""Record lm-evaluation-harness's own results files for tests/test_evaluations.py.

Run with an environment where lm-eval installs beside this project's (it is not a dependency):

    python3 -m venv /tmp/lmenv
    echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/lmenv/lib/python3.11/site-packages/main.pth
    /tmp/lmenv/bin/pip install lm_eval==0.4.13
    /tmp/lmenv/bin/python tests/data/make_lm_eval_results.py

It builds a series of tiny GPT-NeoX models (seeds 0 and 1, steps 0, 10 and 20 of training on a
small cloze text, each with a word-level tokenizer), lays them out as a Hugging Face hub cache
(`models--org--neox-seed<seed>`, revision `step<step>`), and runs lm-eval's command line offline
on each (`--model hf --model_args pretrained=org/neox-seed<seed>,revision=step<step>`) with two
local tasks: a cloze task scored like lambada_openai (loglikelihood: perplexity and acc) and a
multiple-choice one (acc, acc_norm). Seed 0's step 10 is evaluated twice, the second time on the
first 6 documents only (`--limit 6`), so that a test can check which file counts. The results
files land in tests/data/lm_eval/ as lm-eval writes them (`<model>/results_<time>.json`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers

OUT = Path(__file__).parent / "lm_eval"
SEEDS, STEPS = (0, 1), (0, 10, 20)
WORDS = "the cat dog sat ran on under mat log rug box a red blue big small and it was".split()
CLOZE = [
    ("the cat sat on the", "mat"),
    ("the dog ran under the", "log"),
    ("a red cat sat on a", "rug"),
    ("the big dog sat on the", "box"),
    ("a small cat ran under a", "mat"),
    ("the blue dog sat on a", "rug"),
    ("it was a big red", "box"),
    ("the cat and the dog sat on the", "mat"),
    ("a dog ran on the", "log"),
    ("the small blue cat sat under the", "box"),
    ("it was the red", "rug"),
    ("a big cat ran on a", "log"),
]
CHOICE = [
    {"text": "the cat sat on the", "choices": ["mat", "dog", "ran"], "label": 0},
    {"text": "the dog ran under the", "choices": ["sat", "log", "was"], "label": 1},
    {"text": "a red cat sat on a", "choices": ["and", "it", "rug"], "label": 2},
    {"text": "it was a big red", "choices": ["box", "on", "the"], "label": 0},
    {"text": "a dog ran on the", "choices": ["a", "log", "under"], "label": 1},
    {"text": "the blue dog sat on a", "choices": ["was", "ran", "rug"], "label": 2},
]
CLOZE_TASK = """task: tiny_cloze
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood
doc_to_text: "{{{{text}}}}"
doc_to_target: " {{{{target}}}}"
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""
CHOICE_TASK = """task: tiny_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{text}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


def tokenizer() -> transformers.PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(["<unk>", "<eos>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", bos_token="<eos>", pad_token="<eos>"
    )


def save_series(root: Path, tok) -> None:
    """Each seed's model trained on the cloze sentences, saved at every step of STEPS."""
    texts = [f"{text} {target}" for text, target in CLOZE]
    batch = tok(texts, return_tensors="pt", padding=True)
    for seed in SEEDS:
        torch.manual_seed(seed)
        config = transformers.GPTNeoXConfig(
            vocab_size=len(tok),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            eos_token_id=tok.eos_token_id,
            bos_token_id=tok.eos_token_id,
        )
        model = transformers.GPTNeoXForCausalLM(config)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        done = 0
        for step in STEPS:
            while done < step:
                loss = model(**batch, labels=batch["input_ids"]).loss
                opt.zero_grad()
                loss.backward()
                opt.step()
                done += 1
            out = root / f"seed{seed}" / f"step{step}"
            model.save_pretrained(out)
            tok.save_pretrained(out)


def hub_cache(cache: Path, series: Path) -> None:
    """huggingface_hub's layout: blobs by sha256, snapshots/<commit>/<file> links, refs/<revision>."""
    for seed in SEEDS:
        root = cache / f"models--org--neox-seed{seed}"
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        (root / "refs").mkdir(exist_ok=True)
        for step in STEPS:
            commit = hashlib.sha1(f"{seed}-{step}".encode()).hexdigest()
            snapshot = root / "snapshots" / commit
            snapshot.mkdir(parents=True)
            for f in sorted((series / f"seed{seed}" / f"step{step}").iterdir()):
                data = f.read_bytes()
                blob = root / "blobs" / hashlib.sha256(data).hexdigest()
                blob.write_bytes(data)
                (snapshot / f.name).symlink_to(f"../../blobs/{blob.name}")
            (root / "refs" / f"step{step}").write_text(commit)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tok = tokenizer()
        save_series(tmp / "series", tok)
        hub_cache(tmp / "cache", tmp / "series")
        tasks = tmp / "tasks"
        tasks.mkdir()
        cloze = tmp / "cloze.jsonl"
        cloze.write_text("".join(json.dumps({"text": t, "target": w}) + "\n" for t, w in CLOZE))
        choice = tmp / "choice.jsonl"
        choice.write_text("".join(json.dumps(d) + "\n" for d in CHOICE))
        (tasks / "tiny_cloze.yaml").write_text(CLOZE_TASK.format(data=cloze))
        (tasks / "tiny_choice.yaml").write_text(CHOICE_TASK.format(data=choice))
        if OUT.exists():
            shutil.rmtree(OUT)
        env = {
            **os.environ,
            "HF_HUB_CACHE": str(tmp / "cache"),
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "HF_DATASETS_CACHE": str(tmp / "datasets"),
        }
        runs = [(seed, step, None) for seed in SEEDS for step in STEPS] + [(0, 10, 6)]
        for seed, step, limit in runs:
            cmd = [sys.executable, "-m", "lm_eval", "run", "--model", "hf"]
            cmd += ["--model_args", f"pretrained=org/neox-seed{seed},revision=step{step}"]
            cmd += ["--tasks", "tiny_cloze,tiny_choice", "--include_path", str(tasks)]
            cmd += ["--device", "cpu", "--batch_size", "4", "--output_path", str(OUT)]
            cmd += ["--limit", str(limit)] if limit else []
            subprocess.run(cmd, check=True, env=env)
    for f in sorted(OUT.rglob("results_*.json")):
        print(f.relative_to(OUT.parent))


if __name__ == "__main__":
    main()
