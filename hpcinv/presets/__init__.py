"""The presets: every config file hpcinv ships, in one place.

They are the YAML files next to this module (shipped in the package; the checkout's top-level
``configs/`` is a link to this folder, so ``configs/NAME.yaml`` paths work in a checkout). A command
that takes a config accepts a file path or a preset's name: ``hpcinv config show bench2``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in resources.files(__name__).iterdir() if p.name.endswith(".yaml"))


def preset_path(name: str) -> Path | None:
    """The file of the preset called ``name`` (with or without ``.yaml``), or None."""
    path = Path(str(resources.files(__name__).joinpath(f"{name.removesuffix('.yaml')}.yaml")))
    return path if path.is_file() else None
