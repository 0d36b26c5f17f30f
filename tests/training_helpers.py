"""Shared test fixtures for the training tests (a tiny model config that trains in seconds)."""
import os

import ml_collections
import numpy as np

import omni_tf  # noqa: F401
from omni_tf.configs import experiment
from omni_tf.configs import model as model_configs
from omni_tf.model import build_model
from omni_tf.training import pretrained


def tiny_config(mode: str = "omni") -> ml_collections.ConfigDict:
    """``tiny,smoke`` shrunk to d_model 32, one block, vocab 16, levels (0, 0.5, 0.8)."""
    c = experiment.get_config("tiny,smoke")
    m = c.model
    m.d_model, m.num_layers, m.num_heads, m.ff_dim, m.conv_kernel = 32, 1, 2, 64, 3
    m.vocab_size, m.pred_embed_dim, m.pred_hidden, m.joint_dim, m.dropout = 16, 16, 32, 32, 0.0
    c.training.mode = mode
    c.sparsity.levels = (0.0, 0.5, 0.8)
    return c


def small_model_config() -> ml_collections.ConfigDict:
    """The ``tiny`` model shrunk to d_model 32, one block, vocab 16 (export tests: converts in seconds)."""
    c = model_configs.tiny()
    c.d_model, c.num_layers, c.num_heads, c.ff_dim, c.conv_kernel = 32, 1, 2, 64, 5
    c.vocab_size, c.pred_embed_dim, c.pred_hidden, c.joint_dim, c.dropout = 16, 16, 24, 24, 0.0
    return c


def make_bundle(directory, config: ml_collections.ConfigDict, spm_model: str = "", cmvn: str = "",
                info: dict | None = None) -> str:
    """A shipped-model bundle of ``config``'s model in ``<directory>/bundle`` with recognisable weights (0.125
    plus small noise); ``spm_model`` / ``cmvn``: the files it ships (default: stand-ins in ``directory``,
    bytes ``b"spm"`` and an empty CMVN); ``info``: its bundle.json (default name ``smoke``)."""
    model = build_model(config.model)
    for v in model.trainable_variables:  # recognisably not an initialisation
        v.assign(np.full(v.shape, 0.125, np.float32) + np.random.default_rng(0).normal(size=v.shape) * 0.01)
    if not spm_model:
        spm_model = os.path.join(directory, "spm.model")
        with open(spm_model, "wb") as f:
            f.write(b"spm")
    if not cmvn:
        cmvn = os.path.join(directory, "cmvn.json")
        with open(cmvn, "w") as f:
            f.write('{"mean": [], "std": []}')
    return pretrained.write_bundle(model, config, spm_model, cmvn, os.path.join(directory, "bundle"),
                                   info or {"name": "smoke", "cpu_hours": 0.0})


def train_smoke_run(root: str) -> str:
    """A run_demo-like output dir in ``root``: ``train/omni`` trained 1 step (one-layer model, levels 0 / 0.5
    / 0.8, train level 0.5) on the 40-utterance smoke corpus (``benchmarks.omni_vs_pruned``); returns
    ``root``."""
    from benchmarks import omni_vs_pruned as ovp  # noqa: PLC0415
    from omni_tf.training import loop  # noqa: PLC0415
    from omni_tf.training import workdir as workdir_lib  # noqa: PLC0415

    data = ovp.make_smoke_data(root)
    config = ovp.smoke_config(ovp.with_data(experiment.get_config("tiny,smoke"), data))
    with config.unlocked():
        config.sparsity.levels, config.sparsity.train_levels = (0.0, 0.5, 0.8), (0.5,)
        config.training.mode, config.training.max_steps, config.training.max_minutes = "omni", 1, 0.0
    workdir = os.path.join(root, "train", "omni")
    lock = workdir_lib.claim(workdir, config)
    try:
        loop.train(config, workdir)
    finally:
        lock.release()
    return root
