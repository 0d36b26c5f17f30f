"""omni_tf: one streaming RNN-T trained as an Omni-sparsity supernet, exported per device tier to TFLite.

Importing this package sets ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported, so that ``tf.keras``
resolves to ``tf_keras`` (tensorflow-model-optimization works only with it). Import ``omni_tf`` (or any
submodule) before ``tensorflow`` in scripts and tests.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
