"""Simulated dusty videos with ground truth (physically based)."""
