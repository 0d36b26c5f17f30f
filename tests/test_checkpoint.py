"""CheckpointKeeper: round trip, only listed (complete) checkpoints are restored, clear mismatch errors."""
import os

import numpy as np
import pytest
import tensorflow as tf

import omni_tf  # noqa: F401
from omni_tf.training.checkpoint import CheckpointKeeper, TrainCounters


def _objects(value: float = 0.0):
    return {"counters": TrainCounters(), "weights": tf.Variable(tf.fill([3], value))}


def test_round_trip_and_keep(tmp_path):
    objs = _objects()
    keeper = CheckpointKeeper(str(tmp_path), objs, max_to_keep=2)
    assert keeper.restore_or_initialize() is None
    for step in (1, 2, 3):
        objs["counters"].step.assign(step)
        objs["counters"].epoch.assign(step // 2)
        objs["weights"].assign(tf.fill([3], float(step)))
        keeper.save(step)
    assert sorted(os.listdir(tmp_path / "ckpt")) == [
        "checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index", "ckpt-3.data-00000-of-00001",
        "ckpt-3.index"]
    fresh = _objects()
    path = CheckpointKeeper(str(tmp_path), fresh).restore_or_initialize()
    assert path.endswith("ckpt-3")
    want = {"step": 3, "epoch": 1, "batches_in_epoch": 0, "skipped_nonfinite": 0}
    assert fresh["counters"].as_dict() == want
    np.testing.assert_array_equal(fresh["weights"].numpy(), [3.0, 3.0, 3.0])


def test_unlisted_partial_checkpoint_is_ignored(tmp_path):
    objs = _objects(1.0)
    keeper = CheckpointKeeper(str(tmp_path), objs)
    keeper.save(5)
    # What a kill -9 during the next save can leave behind: data/index files not yet in the state file.
    for suffix in (".index", ".data-00000-of-00001"):
        (tmp_path / "ckpt" / f"ckpt-6{suffix}").write_bytes(b"\x00garbage")
    fresh = _objects()
    assert CheckpointKeeper(str(tmp_path), fresh).restore_or_initialize().endswith("ckpt-5")
    np.testing.assert_array_equal(fresh["weights"].numpy(), [1.0, 1.0, 1.0])
    # Saving step 6 again overwrites the partial files with a complete checkpoint.
    fresh["weights"].assign([6.0, 6.0, 6.0])
    CheckpointKeeper(str(tmp_path), fresh).save(6)
    again = _objects()
    assert CheckpointKeeper(str(tmp_path), again).restore_or_initialize().endswith("ckpt-6")
    np.testing.assert_array_equal(again["weights"].numpy(), [6.0, 6.0, 6.0])


def test_mismatched_checkpoint_names_the_path(tmp_path):
    CheckpointKeeper(str(tmp_path), _objects()).save(1)
    other = {"counters": TrainCounters(), "weights": tf.Variable(tf.zeros([4]))}
    with pytest.raises(ValueError, match="ckpt-1 does not match"):
        CheckpointKeeper(str(tmp_path), other).restore_or_initialize()
