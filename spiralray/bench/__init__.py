"""Benchmarks behind ``spiralray bench``: ratios measured side by side in one run, JSON out."""
