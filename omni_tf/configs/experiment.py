"""One experiment config: ``get_config("tiny")`` -> ConfigDict(model, data, sparsity, training, paths).

Use with ``config_flags.DEFINE_config_file("config", "omni_tf/configs/experiment.py:tiny", lock_config=True)``
and override fields on the command line, e.g. ``--config.training.max_steps=100``.
``get_config("tiny,smoke")`` is the runlocal-style smoke variant (a few steps, small batches).
"""
import ml_collections

from omni_tf.configs import data, model, sparsity, training


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
    parts = [p for p in (arg or "tiny").split(",") if p]
    preset = parts[0]
    c = ml_collections.ConfigDict()
    c.preset = preset
    c.model = model.get_preset(preset)
    c.data = data.get_config()
    c.sparsity = sparsity.get_config()
    c.training = training.get_config()
    c.paths = ml_collections.ConfigDict()
    c.paths.manifest_dir = ""  # holds train.tsv / dev.tsv / test.tsv, cmvn.json, spm.model
    c.paths.train_manifest = ""
    c.paths.dev_manifest = ""
    c.paths.spm_model = ""
    c.paths.cmvn = ""
    if "smoke" in parts[1:]:
        c.training.max_steps = 6
        c.training.warmup_steps = 2
        c.training.checkpoint_every = 3
        c.training.summary_every = 1
        c.training.log_every = 1
        c.sparsity.begin_step = 1
        c.sparsity.end_step = 4
        c.sparsity.frequency = 1
        c.data.batch_size = 4
        c.data.max_frames_per_batch = 4000
    return c
