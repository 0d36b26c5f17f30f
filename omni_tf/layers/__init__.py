"""omni_tf.layers."""
