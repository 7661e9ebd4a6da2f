"""Readers and writers: SER videos, frame sources, aiflat FITS products."""
