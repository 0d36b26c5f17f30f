"""ml_collections configs; see experiment.get_config."""
