"""The presets: every config file hpcinv ships, in one place.

They are the YAML files next to this module (shipped in the package; the checkout's top-level
``configs/`` is a link to this folder, so ``configs/NAME.yaml`` paths work in a checkout). A command
that takes a config accepts a file path or a preset's name: ``hpcinv config show symmetric_fcnvmb_data``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# Names the presets had before they were named for what they are: still understood.
ALIASES = {
    "bench": "cpu_fcnvmb_data",
    "bench_fcnvmb": "cpu_fcnvmb_train",
    "bench_inversionnet": "cpu_inversionnet_train",
    "refine_bench": "cpu_refine",
    "bench2": "symmetric_fcnvmb_data",
    "bench2_salt": "symmetric_salt_water_data",
    "bench2_openfwi": "symmetric_openfwi_data",
    "bench2_fcnvmb": "symmetric_mixture_fcnvmb_train",
    "bench2_inversionnet": "symmetric_mixture_inversionnet_train",
}


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in resources.files(__name__).iterdir() if p.name.endswith(".yaml"))


def preset_path(name: str) -> Path | None:
    """The file of the preset called ``name`` (with or without ``.yaml``; or an earlier name of it), or None."""
    name = name.removesuffix(".yaml")
    path = Path(str(resources.files(__name__).joinpath(f"{ALIASES.get(name, name)}.yaml")))
    return path if path.is_file() else None
