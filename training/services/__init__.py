"""Writes for the training app."""
