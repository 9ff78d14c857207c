"""The algorithm, pure: NumPy, SciPy and torch only (no Ray, MLflow or storage)."""
