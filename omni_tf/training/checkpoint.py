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
A ``ckpt-N_temp`` folder such a kill leaves behind is removed by the next ``save``.

Fallback: every reader (training resume, evaluation, export) finds its checkpoint with
``newest_readable(directory)``: the newest checkpoint on disk whose index opens and whose every tensor reads
(checksums included). Newer broken ones (index deleted, data truncated or corrupt) are named in a warning and
skipped; a directory that holds checkpoint files but no readable one raises ``CheckpointError`` naming each
file and its reason. Only a directory with no checkpoint files at all means "start from scratch".

What resume restores exactly: weights, optimizer moments and iterations, survival levels, loss scale, step
and data position. Randomness needs no saved state: subnet sampling, dropout masks (``SeededDropout``,
keyed on (seed, step, subnet, micro-batch, replica, call order)) and SpecAugment / wave augmentation (keyed
on (data seed, epoch, utterance index)) are pure functions of saved counters, so a resumed run computes the
same losses and weights as an uninterrupted one (tests/test_training_resume.py).

Multi-worker: every worker must call ``save`` (it may involve collectives); only the chief writes to
``<workdir>/ckpt``, the others to a scratch directory that is removed after each save.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
from typing import Any

import tensorflow as tf
from absl import logging

CKPT_SUBDIR = "ckpt"
_FILE = re.compile(r"^(?P<prefix>.+-(?P<number>\d+))\.(index|data-\d{5}-of-\d{5})$")


class CheckpointError(ValueError):
    """A checkpoint directory holds checkpoints but none is readable (``broken``: [(path, reason)])."""

    def __init__(self, directory: str, broken: list[tuple[str, str]]):
        self.directory, self.broken = directory, list(broken)
        listing = "; ".join(f"{p}: {r}" for p, r in self.broken)
        super().__init__(f"{directory} holds checkpoints but none is readable: {listing}. Move the broken "
                         "files aside to start from scratch, or restore them from a backup")


def checkpoint_prefixes(directory: str) -> list[str]:
    """Prefixes (``<directory>/ckpt-N``) of every checkpoint with a file on disk or a line in the state file,
    newest (highest N) first. ``ckpt-N_temp`` folders of an interrupted save are not checkpoints."""
    prefixes: dict[str, int] = {}
    for name in tf.io.gfile.listdir(directory) if tf.io.gfile.isdir(directory) else []:
        m = _FILE.match(name)
        if m:
            prefixes[os.path.join(directory, m["prefix"])] = int(m["number"])
    try:
        state = tf.train.get_checkpoint_state(directory)
    except (tf.errors.OpError, ValueError) as e:  # an unparsable state file: the files on disk still count
        logging.warning("%s: unreadable checkpoint state file (%s); looking at the files", directory, e)
        state = None
    for path in state.all_model_checkpoint_paths if state else []:
        full = path if os.path.isabs(path) else os.path.join(directory, path)
        m = _FILE.match(os.path.basename(full) + ".index")
        prefixes.setdefault(full, int(m["number"]) if m else -1)
    return sorted(prefixes, key=lambda p: (prefixes[p], p), reverse=True)


def unreadable_reason(prefix: str) -> str | None:
    """None when checkpoint ``prefix`` opens and every tensor reads (TF verifies each tensor's checksum),
    else the reason, e.g. a missing ``.index`` or a truncated ``.data`` file. Reads one tensor at a time."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)
    except (tf.errors.OpError, IndexError, ValueError, OSError, RuntimeError) as e:
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    return None


def newest_readable(directory: str) -> str | None:
    """Prefix of the newest readable checkpoint in ``directory``; None when it holds no checkpoint at all.

    Newer unreadable checkpoints are skipped with a warning naming each. Raises ``CheckpointError`` (naming
    every file and reason) when there are checkpoints but none is readable: never a silent fresh start.
    """
    broken = []
    for prefix in checkpoint_prefixes(directory):
        reason = unreadable_reason(prefix)
        if reason is None:
            if broken:
                logging.warning("skipping broken checkpoint(s) %s; using %s",
                                "; ".join(f"{p} ({r})" for p, r in broken), prefix)
            return prefix
        broken.append((prefix, reason))
    if broken:
        raise CheckpointError(directory, broken)
    return None


def resolve_checkpoint(path: str) -> str:
    """A directory -> its ``newest_readable`` prefix; a prefix -> itself once readable. Raises
    ``FileNotFoundError`` (no checkpoint in the directory / no file with the prefix) or ``CheckpointError``
    (naming the broken files)."""
    if tf.io.gfile.isdir(path):
        prefix = newest_readable(path)
        if prefix is None:
            raise FileNotFoundError(f"no checkpoint in {path}")
        return prefix
    if not tf.io.gfile.glob(glob.escape(path) + ".*"):
        raise FileNotFoundError(f"no checkpoint at {path}")
    reason = unreadable_reason(path)
    if reason is not None:
        raise CheckpointError(os.path.dirname(path), [(path, reason)])
    return path


def restore_newest_readable(checkpoint: tf.train.Checkpoint, directory: str,
                            partial: bool = False) -> str | None:
    """Restores ``checkpoint`` from ``newest_readable(directory)``; returns the prefix, or None (none there).

    Every existing variable of the objects must be in the checkpoint: one missing, or of another shape (a
    checkpoint of another model/config), raises ``ValueError`` naming its path; unreadable files raise
    ``CheckpointError``. ``partial=True`` (evaluation, search, export) declares that values of the checkpoint
    the objects do not cover (e.g. the optimizer's) are skipped on purpose, which silences TensorFlow's
    per-value "could not be found in the restored object" warnings; ``partial=False`` (training) keeps them.
    """
    prefix = newest_readable(directory)
    if prefix is None:
        return None
    try:
        status = checkpoint.restore(prefix)
        # Objects not yet built (e.g. optimizer slots created lazily) are restored on creation.
        if partial:
            status.expect_partial()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        raise ValueError(f"checkpoint {prefix} does not match this model/config: {e}") from e
    return prefix


def remove_temp_folders(directory: str) -> list[str]:
    """Removes the ``<name>-N_temp`` folders an interrupted save leaves in ``directory``; returns them."""
    stale = [p for p in glob.glob(os.path.join(glob.escape(directory), "*-*_temp")) if os.path.isdir(p)]
    for path in stale:
        logging.warning("removing %s, left by an interrupted checkpoint save", path)
        shutil.rmtree(path)
    return stale


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

    ``restore_or_initialize(partial)`` restores the newest readable checkpoint (``restore_newest_readable``)
    and returns its path, or None when the directory holds no checkpoint; a checkpoint that does not match the
    objects (e.g. another model size) raises with the path in the message, and a directory of only broken
    checkpoints raises ``CheckpointError``.
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

    def restore_or_initialize(self, partial: bool = False) -> str | None:
        return restore_newest_readable(self.checkpoint, self.read_directory, partial)

    def save(self, step: int) -> str | None:
        """Saves at ``step`` (removing ``_temp`` folders of interrupted saves first); returns the chief's
        path (None on other workers)."""
        if self.chief:
            remove_temp_folders(self.directory)
        path = self.manager.save(checkpoint_number=step)
        if not self.chief:
            shutil.rmtree(self.directory, ignore_errors=True)
            return None
        return path
