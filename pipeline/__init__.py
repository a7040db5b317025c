"""Spoken-word and digit recognition pipeline: every stage's logic, free of Snakemake."""

__version__ = "0.1.0"
