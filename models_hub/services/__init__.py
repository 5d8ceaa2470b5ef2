"""Writes for the model hub."""
