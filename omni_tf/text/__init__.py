"""omni_tf.text."""
