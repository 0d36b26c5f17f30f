"""Synthetic-corpus recipes (the README main job)."""
