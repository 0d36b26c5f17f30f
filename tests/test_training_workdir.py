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


def _old_record(config):
    """``config`` as a config.json written before every ADDED_FIELDS field existed (and with the dead
    ``training.eval_every`` the first sessions' configs held)."""
    old = json.loads(config.to_json_best_effort())
    for dotted in workdir.ADDED_FIELDS:
        section, name = dotted.split(".")
        del old[section][name]
    old["training"]["eval_every"] = 0
    return old


def _other(value):
    """A value other than ``value`` of the same kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "x"
    return tuple(value)[:-1] if len(value) else (1.0,)


def test_a_workdir_recorded_before_the_added_fields_resumes_at_their_neutral_values(tmp_path):
    config = experiment.get_config("tiny,smoke")
    with config.unlocked():
        config.sparsity.search_dev_utterances = workdir.ADDED_FIELDS["sparsity.search_dev_utterances"]
    old = _old_record(config)
    (tmp_path / "config.json").write_text(json.dumps(old))
    os.makedirs(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "ckpt-1.index").write_bytes(b"")
    assert workdir.config_changes(old, config) == []
    workdir.claim(str(tmp_path), config).release()
    completed = workdir.with_added_fields(old)  # what compare_runs reads such a run with
    assert completed["training"]["ctc_weight"] == 0.0
    assert completed["sparsity"]["train_levels"] == (0.6, 0.75, 0.9)
    assert workdir.config_changes(completed, config) == []


def test_the_default_search_subset_is_a_change_for_a_workdir_recorded_before_it():
    config = experiment.get_config("tiny,smoke")  # 256 dev utterances; the search used 64 before the field
    assert workdir.config_changes(_old_record(config), config) == [
        "sparsity.search_dev_utterances: '<absent>' -> 256"]


@pytest.mark.parametrize("dotted", sorted(workdir.ADDED_FIELDS))
def test_an_added_field_at_another_value_is_a_change(tmp_path, dotted):
    config = experiment.get_config("tiny,smoke")
    section, name = dotted.split(".")
    with config.unlocked():
        config.sparsity.search_dev_utterances = workdir.ADDED_FIELDS["sparsity.search_dev_utterances"]
        config[section][name] = _other(workdir.ADDED_FIELDS[dotted])
    old = _old_record(experiment.get_config("tiny,smoke"))
    (tmp_path / "config.json").write_text(json.dumps(old))
    os.makedirs(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "ckpt-1.index").write_bytes(b"")
    changes = workdir.config_changes(old, config)
    assert changes == [f"{dotted}: '<absent>' -> {json.loads(json.dumps(config[section][name]))!r}"]
    with pytest.raises(workdir.ConfigChanged, match=dotted.replace(".", r"\.")):
        workdir.claim(str(tmp_path), config)


def test_added_fields_are_config_fields_and_hashes_keep_those_they_held():
    c = experiment.get_config("tiny")
    assert list(workdir.ADDED_FIELDS) == sorted(workdir.ADDED_FIELDS)  # one entry per line, sorted
    assert list(workdir.HASHED_ADDED_FIELDS) == sorted(workdir.HASHED_ADDED_FIELDS)
    assert set(workdir.HASHED_ADDED_FIELDS) < set(workdir.ADDED_FIELDS)
    for dotted in workdir.ADDED_FIELDS:
        section, name = dotted.split(".")
        assert name in c[section], dotted
    fields = workdir.result_fields(c)  # stage keys: as before these fields were registered
    assert set(workdir.HASHED_ADDED_FIELDS) <= set(fields)
    assert "sparsity.per_level_norm" not in fields and "training.eval_every" not in fields


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
