"""Synthetic twins of the datasets, written in each release's exact format."""
