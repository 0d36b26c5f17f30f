"""omni_tf.data."""
