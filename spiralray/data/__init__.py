"""Data: synthetic nuclei, training pairs and normalisation (storage goes through storage.py)."""
