"""Finding models: the packaged default, a model directory, or (later) a registry URI."""

from __future__ import annotations

import os
from importlib import resources

from .core.config import SpiralNetConfig
from .core.net import SpiralNet
from .errors import SpiralrayError
from .io import storage

DEFAULT = "spiralnet"


def default_model_dir() -> str:
    return str(resources.files("spiralray") / "weights" / DEFAULT)


def save(net: SpiralNet, path, card: str | None = None, extra: dict | None = None) -> None:
    config = {"spiralnet": net.config.to_dict(), **(extra or {})}
    storage.save_model_dir(path, net.state_dict(), config, card)


def load(model: str | None = None) -> SpiralNet:
    """``None`` -> the shipped default; a directory -> that model directory."""
    path = default_model_dir() if model in (None, "", "default") else model
    if str(path).startswith("models:/"):
        from .train import registry  # MLflow only where a registry URI is used

        return registry.load(path)
    if not os.path.isdir(path):
        raise SpiralrayError(f"model not found: {path} (a model directory or models:/NAME@ALIAS)")
    tensors, config = storage.load_model_dir(path)
    try:
        net = SpiralNet.build(SpiralNetConfig.from_dict(config["spiralnet"]), seed=None)
        return net.load_state_dict(tensors)
    except ValueError as exc:  # a setting misspelt or mistyped in a hand-edited config.json
        raise SpiralrayError(f"{path}/config.json: {exc}") from exc
    except (KeyError, TypeError, RuntimeError) as exc:  # a config or weights of another model
        raise SpiralrayError(f"broken model directory {path}: {_first_lines(exc)}") from exc


def _first_lines(exc: BaseException) -> str:
    """torch's state-dict error in one line: its first problem and how many more (it lists
    every mismatched tensor on a line of its own)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = " ".join(lines[:2])
    more = f" (and {len(lines) - 2} more)" if len(lines) > 2 else ""
    return f"{exc.__class__.__name__}: {text}{more}"
