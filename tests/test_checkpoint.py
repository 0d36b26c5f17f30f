"""CheckpointKeeper: round trip, only listed (complete) checkpoints are restored, clear mismatch errors."""
import os

import numpy as np
import pytest
import tensorflow as tf

import omni_tf  # noqa: F401
from omni_tf.training import checkpoint
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


def _three_checkpoints(tmp_path):
    objs = _objects()
    keeper = CheckpointKeeper(str(tmp_path), objs, max_to_keep=5)
    for step in (1, 2, 3):
        objs["weights"].assign(tf.fill([3], float(step)))
        keeper.save(step)
    return tmp_path / "ckpt"


def _break(ckpt_dir, step: int, how: str) -> None:
    if how == "index_deleted":
        os.remove(ckpt_dir / f"ckpt-{step}.index")
    else:  # data truncated
        data = ckpt_dir / f"ckpt-{step}.data-00000-of-00001"
        os.truncate(data, os.path.getsize(data) // 2)


@pytest.mark.parametrize("how", ["index_deleted", "data_truncated"])
def test_broken_latest_falls_back_with_a_warning_naming_it(tmp_path, how, monkeypatch):
    ckpt_dir = _three_checkpoints(tmp_path)
    _break(ckpt_dir, 3, how)
    warnings = []
    monkeypatch.setattr(checkpoint.logging, "warning", lambda msg, *a: warnings.append(msg % a))
    fresh = _objects()
    path = CheckpointKeeper(str(tmp_path), fresh).restore_or_initialize()
    assert path.endswith("ckpt-2")
    np.testing.assert_array_equal(fresh["weights"].numpy(), [2.0, 2.0, 2.0])
    assert len(warnings) == 1 and str(ckpt_dir / "ckpt-3") in warnings[0]
    # Evaluation and export resolve the same way.
    assert checkpoint.resolve_checkpoint(str(ckpt_dir)).endswith("ckpt-2")


def test_only_broken_checkpoints_fail_naming_each(tmp_path):
    ckpt_dir = _three_checkpoints(tmp_path)
    _break(ckpt_dir, 3, "data_truncated")
    for step in (1, 2):
        _break(ckpt_dir, step, "index_deleted")
    with pytest.raises(checkpoint.CheckpointError) as err:
        CheckpointKeeper(str(tmp_path), _objects()).restore_or_initialize()
    assert [p for p, _ in err.value.broken] == [str(ckpt_dir / f"ckpt-{s}") for s in (3, 2, 1)]
    for step in (1, 2, 3):
        assert str(ckpt_dir / f"ckpt-{step}") in str(err.value)
    with pytest.raises(checkpoint.CheckpointError, match="ckpt-3"):
        checkpoint.resolve_checkpoint(str(ckpt_dir / "ckpt-3"))  # an explicit prefix is checked too
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        checkpoint.resolve_checkpoint(str(tmp_path / "empty"))


def test_temp_folder_of_an_interrupted_save_is_removed_on_next_save(tmp_path):
    ckpt_dir = _three_checkpoints(tmp_path)
    temp = ckpt_dir / "ckpt-7_temp"  # killed while saving step 7; the restart resumes from 3
    temp.mkdir()
    (temp / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"\x00" * 64)
    keeper = CheckpointKeeper(str(tmp_path), _objects(4.0), max_to_keep=5)
    assert keeper.restore_or_initialize().endswith("ckpt-3")
    keeper.save(4)
    assert not temp.exists() and (ckpt_dir / "ckpt-4.index").exists()


def test_evaluation_and_export_fall_back_past_a_broken_latest(tmp_path):
    from omni_tf.supernet import Supernet
    from tests.training_helpers import tiny_config
    from tflite_export import inference_model

    config = tiny_config("omni")
    trained = Supernet(config)
    keeper = CheckpointKeeper(str(tmp_path), trained.checkpoint_objects(), max_to_keep=5)
    kernel = trained.model.prunable_kernels()[0][1]
    for step in (1, 2):
        kernel.assign(tf.fill(kernel.shape, float(step)))
        keeper.save(step)
    _break(tmp_path / "ckpt", 2, "index_deleted")
    restored = Supernet(config)  # the one restore path of evaluation, search and export
    assert restored.restore(str(tmp_path))[0].endswith("ckpt-1")
    np.testing.assert_array_equal(restored.model.prunable_kernels()[0][1].numpy(), 1.0)
    exported = inference_model.bake_supernet(restored, 0).module.model
    np.testing.assert_array_equal(exported.prunable_kernels()[0][1].numpy(), 1.0)
