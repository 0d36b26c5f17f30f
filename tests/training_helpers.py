"""Shared test fixtures for the training tests (a tiny model config that trains in seconds)."""
import ml_collections

import omni_tf  # noqa: F401
from omni_tf.configs import experiment
from omni_tf.configs import model as model_configs


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
