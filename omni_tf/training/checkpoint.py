"""Checkpoints of the whole training state, and resume.

One ``tf.train.Checkpoint`` holds the model, the optimizer (moments + iterations; with mixed float16 the
``LossScaleOptimizer``'s scale too), the supernet survival levels (``SupernetMasks``), the progress clock of
the schedules (``omni_tf.training.progress``), and a ``TrainCounters`` module: step, data position (epoch and
batches consumed in it), skipped-update counts. Sampling randomness is stateless, keyed on (seed, step), so
no RNG state is saved.

Atomicity: TF's V2 saver writes ``ckpt-N.data-*`` and then ``ckpt-N.index``; ``CheckpointManager`` records
``ckpt-N`` in the ``checkpoint`` state file (written to a temp file and renamed) only after both exist. A
process killed mid-save leaves at most unlisted ``ckpt-N.*`` files, and restore reads the last *listed*
checkpoint (tested in tests/test_checkpoint.py and by the kill -9 test in tests/test_training_resume.py).

Multi-worker: every worker must call ``save`` (it may involve collectives); only the chief writes to
``<workdir>/ckpt``, the others to a scratch directory that is removed after each save.
"""
from __future__ import annotations

import os
import shutil
from typing import Any

import tensorflow as tf

CKPT_SUBDIR = "ckpt"


class TrainCounters(tf.Module):
    """Scalar int64 progress variables saved with the model.

    ``step``: train steps done (applied or skipped); ``epoch`` / ``batches_in_epoch``: data position;
    ``skipped_nonfinite``: updates skipped for a NaN/Inf loss or gradient.
    """

    def __init__(self, name: str = "counters"):
        super().__init__(name=name)
        agg = tf.VariableAggregation.ONLY_FIRST_REPLICA

        def var(n):
            return tf.Variable(0, dtype=tf.int64, trainable=False, name=n, aggregation=agg)

        self.step = var("step")
        self.epoch = var("epoch")
        self.batches_in_epoch = var("batches_in_epoch")
        self.skipped_nonfinite = var("skipped_nonfinite")

    def as_dict(self) -> dict[str, int]:
        return {k: int(getattr(self, k).numpy()) for k in ("step", "epoch", "batches_in_epoch",
                                                           "skipped_nonfinite")}


def _is_chief(strategy: tf.distribute.Strategy | None) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (task_type == "worker" and task_id == 0
                                    and "chief" not in resolver.cluster_spec().as_dict())


def checkpoint_dir(workdir: str, strategy: tf.distribute.Strategy | None = None) -> str:
    """``<workdir>/ckpt`` for the chief; a per-worker scratch directory for the others."""
    if _is_chief(strategy):
        return os.path.join(workdir, CKPT_SUBDIR)
    resolver = strategy.cluster_resolver
    return os.path.join(workdir, f".ckpt_tmp_{resolver.task_type}_{resolver.task_id}")


class CheckpointKeeper:
    """Save/restore of a training state (``objects``: name -> trackable) under ``<workdir>/ckpt``.

    ``restore_or_initialize()`` returns the restored checkpoint path or None; a checkpoint that does not
    match the objects (e.g. another model size) raises with the path in the message.
    """

    def __init__(self, workdir: str, objects: dict[str, Any], max_to_keep: int = 3,
                 strategy: tf.distribute.Strategy | None = None):
        self.chief = _is_chief(strategy)
        self.directory = checkpoint_dir(workdir, strategy)
        # Non-chief workers restore from the chief's directory (shared file system assumed).
        self.read_directory = os.path.join(workdir, CKPT_SUBDIR)
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.directory, max_to_keep=max_to_keep,
                                                  checkpoint_name="ckpt")

    @property
    def latest(self) -> str | None:
        return tf.train.latest_checkpoint(self.read_directory)

    def restore_or_initialize(self) -> str | None:
        path = self.latest
        if path is None:
            return None
        try:
            # Objects not yet built (e.g. optimizer slots created lazily) are restored on creation.
            self.checkpoint.restore(path).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as e:
            raise ValueError(f"checkpoint {path} does not match this model/config: {e}") from e
        return path

    def save(self, step: int) -> str | None:
        """Saves at ``step``; returns the chief's path (None on other workers)."""
        path = self.manager.save(checkpoint_number=step)
        if not self.chief:
            shutil.rmtree(self.directory, ignore_errors=True)
            return None
        return path
