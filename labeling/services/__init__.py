"""Writes for the labeling app. Views, APIs, admin and tasks call these."""
