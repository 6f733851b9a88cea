"""The steps that turn a claimed job into a delivered video."""
