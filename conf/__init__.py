"""Configuration files: defaults.yaml (every key and its default) and the local / cluster profiles."""
