"""Dust detectors: local (offline, default), gemini, consensus."""
