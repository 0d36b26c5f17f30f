"""omni_tf.losses."""
