"""End to end on real data: espeak-ng corpus -> prepare -> spm -> train (ManifestSource) -> evaluate."""
import json
import os
import subprocess
import sys

import omni_tf  # noqa: F401
from omni_tf.supernet import Supernet
from omni_tf.training import evaluation, loop, sources
from tests.training_helpers import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": ROOT, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_train_and_evaluate_on_prepared_corpus(tmp_path):
    raw, prep = str(tmp_path / "raw"), str(tmp_path / "prep")
    _run("recipes.synthetic.make_corpus", f"--out_dir={raw}", "--num_utterances=16", "--dev_fraction=0.25",
         "--test_fraction=0.1", "--num_workers=2")
    _run("recipes.librispeech.prepare", f"--librispeech_dir={raw}", f"--out_dir={prep}")
    _run("recipes.librispeech.train_spm", f"--manifest={prep}/train.tsv", "--vocab_size=40",
         f"--out_prefix={prep}/spm")
    config = tiny_config("omni")
    config.model.vocab_size = 40
    config.paths.manifest_dir = prep
    config.training.max_steps = 3
    config.sparsity.sampler, config.sparsity.begin_step = "uniform", 0
    workdir = str(tmp_path / "work")
    metrics = loop.train(config, workdir)  # default source: ManifestSource over prep/train.tsv
    assert metrics["step"] == 3 and metrics["skipped_nonfinite"] == 0 and metrics["frames_per_s"] > 0
    assert json.load(open(os.path.join(workdir, "train_metrics.json")))["checkpoint"].endswith("ckpt-3")
    supernet = Supernet(config)
    assert supernet.restore(workdir)[0].endswith("ckpt-3")
    dev = sources.ManifestSource(config, split="dev", training=False)
    batches = evaluation.load_batches(dev.dataset(0))
    rows = evaluation.evaluate_levels(supernet, batches, dev.tokenizer, out_dir=workdir)
    n_dev = len(open(os.path.join(prep, "dev.tsv")).read().splitlines()) - 1
    assert [r["utterances"] for r in rows] == [n_dev] * 3 and all(r["ref_words"] > 0 for r in rows)
