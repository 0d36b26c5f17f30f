"""omni_tf/training/workdir.py: one writer per training workdir, and no silent resume under another config."""
import json
import os
import subprocess
import sys

import pytest

import omni_tf  # noqa: F401
from omni_tf.configs import experiment
from omni_tf.training import workdir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _with_checkpoint(path, config):
    os.makedirs(path / "ckpt")
    (path / "ckpt" / "ckpt-1.index").write_bytes(b"")
    (path / "config.json").write_text(config.to_json_best_effort(indent=1))


def test_resume_with_a_result_changing_field_is_refused_naming_it(tmp_path):
    config = experiment.get_config("tiny,smoke")
    _with_checkpoint(tmp_path, config)
    other = experiment.get_config("tiny,smoke")
    with other.unlocked():
        other.training.learning_rate = 9e-3
        other.model.dropout = 0.3
    with pytest.raises(workdir.ConfigChanged,
                       match=r"model\.dropout.*training\.learning_rate: 0\.0015 -> 0\.009"):
        workdir.claim(str(tmp_path), other)
    assert json.loads((tmp_path / "config.json").read_text())["training"]["learning_rate"] == 1.5e-3
    lock = workdir.claim(str(tmp_path), other, allow_config_change=True)
    lock.release()
    assert json.loads((tmp_path / "config.json").read_text())["training"]["learning_rate"] == 9e-3


def test_cadence_paths_and_budget_do_not_block_resume(tmp_path):
    config = experiment.get_config("tiny,smoke")
    _with_checkpoint(tmp_path, config)
    more = experiment.get_config("tiny,smoke")
    with more.unlocked():
        more.training.max_steps *= 10
        more.training.max_minutes = 30.0
        more.training.log_every, more.training.checkpoint_every = 1, 1
        more.paths.manifest_dir = "/elsewhere/data"
    assert workdir.config_changes(json.loads((tmp_path / "config.json").read_text()), more) == []
    workdir.claim(str(tmp_path), more).release()



def test_a_workdir_recorded_before_the_variants_record_resumes(tmp_path):
    config = experiment.get_config("tiny,smoke")
    old = config.to_dict()
    del old["variants"]  # config.json of a run made before get_config recorded its variants
    (tmp_path / "config.json").write_text(json.dumps(old))
    os.makedirs(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "ckpt-1.index").write_bytes(b"")
    assert workdir.config_changes(old, config) == []
    workdir.claim(str(tmp_path), config).release()
    finetune = experiment.get_config("tiny,finetune,smoke")  # what the variant sets is compared
    assert any(c.startswith("sparsity.dense_warmup") for c in workdir.config_changes(old, finetune))


def test_second_train_process_on_a_workdir_fails_naming_the_holder(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    hold = ("import sys\nfrom omni_tf import fileio\nwith fileio.DirLock(sys.argv[1]):\n"
            "    print('locked', flush=True)\n    sys.stdin.readline()\n")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path / "w")], cwd=ROOT, env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = subprocess.run(
            [sys.executable, "-m", "recipes.librispeech.train",
             "--config=omni_tf/configs/experiment.py:tiny,smoke", f"--workdir={tmp_path / 'w'}",
             "--random_features=2", "--config.training.max_steps=2"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    finally:
        holder.kill()
        holder.wait()
    assert second.returncode != 0
    assert f'"pid": {holder.pid}' in second.stderr and "is in use" in second.stderr, second.stderr[-2000:]
    assert not os.path.exists(tmp_path / "w" / "ckpt")


def test_train_recipe_refuses_another_config_on_a_trained_workdir(tmp_path):
    config = experiment.get_config("tiny,smoke")
    _with_checkpoint(tmp_path / "w", config)
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-m", "recipes.librispeech.train",
         "--config=omni_tf/configs/experiment.py:tiny,smoke", f"--workdir={tmp_path / 'w'}",
         "--random_features=2", "--config.training.learning_rate=0.01"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "training.learning_rate: 0.0015 -> 0.01" in done.stderr, done.stderr[-2000:]
    assert "--allow_config_change" in done.stderr
