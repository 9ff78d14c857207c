"""Configuration of the Serve application: one frozen record, read from the Serve config's
``args`` (``cluster/serve.yaml``), ``spiralray serve`` flags or Python.

Defaults size the request queue so that 16 concurrent clients never see a refusal on one
segmenter replica (``admit`` = ``max_ongoing + max_queued`` = 48 requests), while memory stays
bounded by ``admit x max_bytes`` of request bodies whatever the offered load.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from ..errors import SpiralrayError

# Fields the segmenter's ``user_config`` carries: changing only these reconfigures the running
# replicas in place (no restart, no downtime); anything else redeploys.
USER_CONFIG = (
    "model",
    "tracking_uri",
    "generation",
    "device",
    "engine_batch_size",
    "threads",
    "max_batch_size",
    "batch_wait_timeout_s",
)


@dataclass(frozen=True)
class ServeConfig:
    # The model: None (the shipped one), a model directory, or models:/NAME@ALIAS (MLflow).
    model: str | None = None
    # The MLflow store a models:/ URI is resolved in (None: the replica's MLFLOW_TRACKING_URI).
    tracking_uri: str | None = None
    # Bump to reload the model without changing its name: a new alias target is resolved then.
    generation: int = 0
    device: str = "auto"  # "auto": CUDA when the replica has a GPU
    engine_batch_size: int = 256  # regions per forward pass inside one engine call
    threads: int | None = None  # torch threads per segmenter replica (None: Ray's default)

    # @serve.batch: images segmented together in one lockstep spiral (1 = unbatched).
    max_batch_size: int = 8
    batch_wait_timeout_s: float = 0.01

    # Segmenter deployment: resources and scale.
    num_cpus: float = 0.5
    num_gpus: float = 0.0
    replicas: int = 1
    # Serve autoscaling_config (min_replicas, max_replicas, target_ongoing_requests, ...);
    # when set it replaces ``replicas``.
    autoscaling: dict | None = None
    max_ongoing: int | None = None  # per replica; None: 2 x max_batch_size (one batch runs, one fills)
    max_queued: int = 32  # requests waiting for a segmenter slot; beyond: 503 at once

    # Ingress (HTTP) deployment.
    ingress_num_cpus: float = 0.25
    ingress_replicas: int = 1
    # Above ``admit`` so that the excess reaches the ingress and gets its JSON 503 at once.
    ingress_max_ongoing: int = 256
    ingress_max_queued: int = 256  # waiting in the HTTP proxy; beyond: Ray's own 503

    # Request limits.
    max_bytes: int = 64 << 20  # request body
    max_pixels: int = 4096 * 4096  # decoded array elements (checked from the header before decoding)

    def __post_init__(self):
        positive = (
            "engine_batch_size",
            "max_batch_size",
            "replicas",
            "max_queued",
            "max_bytes",
            "max_pixels",
        )
        for name in (*positive, "ingress_replicas", "ingress_max_ongoing", "ingress_max_queued"):
            if getattr(self, name) < 1:
                raise SpiralrayError(f"serve config: {name} must be at least 1, got {getattr(self, name)}")
        if self.max_ongoing is not None and self.max_ongoing < self.max_batch_size:
            raise SpiralrayError(
                f"serve config: max_ongoing ({self.max_ongoing}) must be at least max_batch_size "
                f"({self.max_batch_size}), or batches never fill"
            )
        if self.batch_wait_timeout_s < 0 or self.num_cpus < 0 or self.num_gpus < 0:
            raise SpiralrayError("serve config: batch_wait_timeout_s, num_cpus and num_gpus must be >= 0")
        if self.threads is not None and self.threads < 1:
            raise SpiralrayError(f"serve config: threads must be at least 1, got {self.threads}")

    @property
    def segmenter_max_ongoing(self) -> int:
        return self.max_ongoing or 2 * self.max_batch_size

    @property
    def admit(self) -> int:
        """Requests one ingress replica admits at once: what the segmenter replicas can run and
        queue (at their autoscaling maximum); the rest are refused with 503 at once."""
        replicas = (
            (self.autoscaling or {}).get("max_replicas", self.replicas) if self.autoscaling else self.replicas
        )
        return self.segmenter_max_ongoing * int(replicas) + self.max_queued

    def user_config(self) -> dict:
        return {k: getattr(self, k) for k in USER_CONFIG}

    def replace(self, **changes) -> ServeConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict | None) -> ServeConfig:
        """From a mapping; values may be strings (``serve run module:app key=value``)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values or {}) - set(fields))
        if unknown:
            raise SpiralrayError(f"unknown serve config key(s) {unknown} (known: {', '.join(fields)})")
        return cls(**{k: _coerce(k, fields[k].type, v) for k, v in (values or {}).items()})


def _coerce(name: str, kind: str, value):
    """A string from a command line to the field's type (``kind`` is its annotation text)."""
    if not isinstance(value, str):
        return value
    if "None" in kind and value.lower() in ("", "none", "null"):
        return None
    base = kind.split(" |")[0]
    parse = {"int": int, "float": float, "dict": json.loads}.get(base)
    if parse is None:
        return value
    try:
        return parse(value)
    except ValueError:
        raise SpiralrayError(f"serve config: {name} must be {base}, got {value!r}") from None
