"""Training: samples, steps, the in-process loop, the Ray Train driver and the MLflow registry."""
