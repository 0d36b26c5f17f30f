"""Per-tier TFLite export: inference model, conversion, parity, bundle."""
import omni_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
