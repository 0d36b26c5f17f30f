"""omni_tf.sparsity."""
