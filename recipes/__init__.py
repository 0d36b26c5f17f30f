"""Recipes: thin absl scripts over the omni_tf library."""
