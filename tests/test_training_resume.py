"""kill -9 + restart resumes exactly: real recipe subprocesses, tiny model, random-feature batches."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import omni_tf  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--config.model.d_model=32", "--config.model.num_layers=1", "--config.model.num_heads=2",
    "--config.model.ff_dim=64", "--config.model.conv_kernel=3", "--config.model.vocab_size=16",
    "--config.model.pred_embed_dim=16", "--config.model.pred_hidden=32", "--config.model.joint_dim=32",
    "--config.model.dropout=0.0", "--config.training.warmup_steps=2", "--config.training.log_every=1",
    "--config.training.summary_every=2", "--config.sparsity.begin_step=0", "--config.sparsity.end_step=4",
    "--config.sparsity.frequency=1", "--config.sparsity.sampler=uniform",
    "--config.sparsity.subnets_per_step=1",
    "--random_features=3", "--random_batch_size=4",
]


def train_cmd(workdir: str, max_steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "recipes.librispeech.train", "--config=omni_tf/configs/experiment.py:tiny",
            f"--workdir={workdir}", f"--config.training.max_steps={max_steps}", *TINY, *extra]


def popen(cmd: list[str], log_path: str, env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
           **(env or {})}
    with open(log_path, "w") as log:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait(proc: subprocess.Popen, log_path: str, timeout: float = 150) -> None:
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"timed out; log:\n{open(log_path).read()[-3000:]}") from None
    assert rc == 0, f"exit {rc}; log:\n{open(log_path).read()[-3000:]}"


def checkpoint_values(prefix: str) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(prefix)
    # progress/seconds is the wall-clock training time: it differs between any two runs (and does not steer
    # the schedules without a max_minutes budget).
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if "save_counter" not in k and "_CHECKPOINTABLE_OBJECT_GRAPH" not in k
            and not k.startswith("progress/seconds")}


def assert_same_state(a: dict, b: dict, atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if a[k].dtype.kind in "iub":
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            np.testing.assert_allclose(a[k], b[k], atol=atol, rtol=1e-4, err_msg=k)


def listed_checkpoint(workdir: str) -> str | None:
    return tf.train.latest_checkpoint(os.path.join(workdir, "ckpt"))


def test_kill9_then_restart_resumes_exactly(tmp_path):
    steps = 8
    full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
    common = ("--config.training.checkpoint_every=2", "--config.training.keep_checkpoints=10")
    p_full = popen(train_cmd(full, steps, *common), str(tmp_path / "full.log"))
    p_kill = popen(train_cmd(killed, steps, *common), str(tmp_path / "killed.log"))
    try:
        deadline = time.monotonic() + 150
        while listed_checkpoint(killed) is None:
            assert p_kill.poll() is None, open(tmp_path / "killed.log").read()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 150 s"
            time.sleep(0.05)
        os.kill(p_kill.pid, signal.SIGKILL)
        p_kill.wait()
    finally:
        if p_kill.poll() is None:
            p_kill.kill()
    resume_from = listed_checkpoint(killed)
    at_kill = checkpoint_values(resume_from)
    k = int(resume_from.rsplit("-", 1)[1])
    assert k < steps, "killed too late to test a resume"
    p_resume = popen(train_cmd(killed, steps, *common), str(tmp_path / "resume.log"))
    wait(p_full, str(tmp_path / "full.log"))
    wait(p_resume, str(tmp_path / "resume.log"))

    metrics = json.load(open(os.path.join(killed, "train_metrics.json")))
    assert metrics["restored_from"] == resume_from and metrics["step"] == steps
    # The checkpoint resumed from equals the uninterrupted run's at the same step (masks, Adam, counters).
    ref = checkpoint_values(os.path.join(full, "ckpt", f"ckpt-{k}"))
    assert_same_state(at_kill, ref)
    assert int(ref["optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"]) == k
    assert int(ref["counters/step/.ATTRIBUTES/VARIABLE_VALUE"]) == k
    assert any("survival" in key for key in ref)
    # The interrupted + resumed run ends where the uninterrupted one does.
    final_killed, final_full = listed_checkpoint(killed), listed_checkpoint(full)
    assert_same_state(checkpoint_values(final_killed), checkpoint_values(final_full))
    assert listed_checkpoint(full).endswith(f"ckpt-{steps}")
    # Every listed checkpoint of the killed run is readable (none corrupt).
    for index in glob.glob(os.path.join(killed, "ckpt", "ckpt-*.index")):
        prefix = index[: -len(".index")]
        if prefix in tf.train.get_checkpoint_state(os.path.join(killed, "ckpt")).all_model_checkpoint_paths:
            checkpoint_values(prefix)


class _CharTokenizer:
    def encode(self, text: str) -> list[int]:
        return [2 + ord(ch) % 14 for ch in text if ch != " "]


class _TinyCorpus:
    """Six noise WAVs (0.5-0.9 s) through the real pipeline: SpecAugment on, two utterances per batch."""

    def __init__(self, root, data_config):
        import soundfile as sf

        from omni_tf.data import librispeech, pipeline

        rng = np.random.default_rng(0)
        rows = []
        for i in range(6):
            n = 8000 + 1280 * i
            path = str(root / f"u{i}.wav")
            sf.write(path, (0.1 * rng.standard_normal(n)).astype(np.float32), 16000, subtype="FLOAT")
            rows.append({"id": f"u{i}", "path": path, "num_samples": n, "sample_rate": 16000,
                         "duration_s": n / 16000, "speaker": "s", "text": "abc def"[: 3 + i % 4]})
        self.manifest = str(root / "train.tsv")
        librispeech.write_manifest(rows, self.manifest)
        self.data_config, self._make = data_config, pipeline.make_dataset

    def dataset(self, epoch: int, skip_batches: int = 0):
        return self._make(self.manifest, _CharTokenizer(), self.data_config, None, training=True, epoch=epoch,
                          skip_batches=skip_batches)


def test_crash_and_restart_equals_uninterrupted_with_dropout_and_specaugment(tmp_path):
    from omni_tf.training import loop
    from tests.training_helpers import tiny_config

    config = tiny_config("omni")
    config.model.dropout = 0.1
    d = config.data
    d.specaugment, d.feature_cache_dir, d.batch_size, d.time_mask_max_ratio = True, "", 2, 0.2
    t = config.training
    t.max_steps, t.checkpoint_every, t.keep_checkpoints, t.log_every, t.summary_every = 4, 2, 10, 100, 100
    config.sparsity.sampler, config.sparsity.begin_step = "uniform", 0
    source = _TinyCorpus(tmp_path, config.data)

    full_losses, resumed_losses = {}, {}
    loop.run(config, str(tmp_path / "full"), source,
             lambda s, out: full_losses.setdefault(s, float(out["loss"])))

    class Crash(Exception):
        """Stands for kill -9 between two checkpoints."""

    def crash_at_3(step, out):
        resumed_losses[step] = float(out["loss"])
        if step == 3:  # after the step-2 checkpoint, before step 3's is written: step 3 is lost
            raise Crash

    with pytest.raises(Crash):
        loop.run(config, str(tmp_path / "resumed"), source, crash_at_3)
    metrics = loop.run(config, str(tmp_path / "resumed"), source,
                       lambda s, out: resumed_losses.__setitem__(s, float(out["loss"])))
    assert metrics["restored_from"].endswith("ckpt-2") and metrics["step"] == 4
    assert sorted(resumed_losses) == [1, 2, 3, 4]
    # Dropout masks and SpecAugment draws are functions of (seed, step): the same losses, bit for bit.
    assert resumed_losses == full_losses
    assert_same_state(checkpoint_values(listed_checkpoint(str(tmp_path / "resumed"))),
                      checkpoint_values(listed_checkpoint(str(tmp_path / "full"))), atol=0)
