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
    config = {"spiralnet": net.config.to_dict(), "spiralray_version": _version(), **(extra or {})}
    storage.save_model_dir(path, net.state_dict(), config, card)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spiralray")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _newer(saved) -> bool:
    """Whether a model was saved by a later spiralray than this one (its settings may be new)."""

    def parts(v):
        return tuple(int(p) if p.isdigit() else 0 for p in str(v).split(".")[:3])

    return saved not in (None, "unknown") and _version() != "unknown" and parts(saved) > parts(_version())


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
        saved = config.get("spiralray_version")
        if _newer(saved) and str(exc).startswith("unknown setting"):  # not a typo: a new setting
            raise SpiralrayError(
                f"{path} was saved by spiralray {saved}, newer than this {_version()}: "
                f"{str(exc).split(' (')[0]}; upgrade spiralray to use it"
            ) from exc
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
