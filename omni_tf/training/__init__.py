"""omni_tf.training."""
