"""One experiment config: ``get_config("tiny")`` -> ConfigDict(model, data, sparsity, training, paths).

Use with ``config_flags.DEFINE_config_file("config", "omni_tf/configs/experiment.py:tiny", lock_config=True)``
and override fields on the command line, e.g. ``--config.training.max_steps=100``.
``get_config("tiny,smoke")`` is the runlocal-style smoke variant (a few steps, small batches);
``get_config("paper,librispeech")`` is the LibriSpeech 960 h schedule (``recipes/librispeech/run.py``).
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
    if "demo" in parts[1:]:
        _demo(c)
    if "librispeech" in parts[1:]:
        _librispeech_960h(c)
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


def _demo(c: ml_collections.ConfigDict) -> None:
    """The README demo (``recipes/synthetic/run_demo.py``): synthetic corpus size, float-friendly blocks."""
    c.data.demo_utterances = 4000
    c.sparsity.block = "1x4"  # TFLite's sparse float FULLY_CONNECTED blocks (float16/float32 tiers)


def _librispeech_960h(c: ml_collections.ConfigDict) -> None:
    """In the spirit of the paper: ~120 epochs of 960 h (281k utterances, ~2.3k batches of ~120 utterances
    per epoch), SpecAugment + speed perturbation, sparsity ramped over the middle third, sandwich sampling."""
    c.data.max_frames_per_batch = 120000
    c.data.batch_size = 256
    c.data.specaugment = True
    c.data.time_masks = 10
    c.data.speed_perturb = True
    c.training.max_steps = 280000
    c.training.warmup_steps = 10000
    c.training.learning_rate = 1e-3
    c.training.checkpoint_every = 2000
    c.training.summary_every = 200
    c.training.log_every = 200
    c.sparsity.levels = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9)
    c.sparsity.begin_step = 60000
    c.sparsity.end_step = 180000
    c.sparsity.frequency = 1000
    c.sparsity.sampler = "sandwich"
    c.sparsity.subnets_per_step = 1
