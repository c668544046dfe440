"""Keras callbacks of a member's fit, one per file."""
