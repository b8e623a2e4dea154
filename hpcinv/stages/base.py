"""What every stage shares: how it runs (:class:`Execution`), and its entry in the table of stages
(:class:`Stage`) that the command line, the SLURM launchers, their jobs, ``hpcinv cluster`` and the
quickstart are built from.

A stage is a *request* model (what to make, from what, where: everything that decides its result) and
one ``run(request, execution)``; its ``check(request)`` runs every check that needs no cluster before
anything is written (the launchers run it on the login node).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class Execution:
    """How a stage runs, never what it makes: nothing here is part of a result's identity."""

    address: str | None = None  # a Ray cluster to join (None: $RAY_ADDRESS, else a local instance)
    in_process: bool = False  # no Ray: everything in this process
    workers: int | None = None  # actors (generate, predict, refine): default one per core, or per GPU
    progress: bool = True  # progress bars


@dataclass(frozen=True)
class Arg:
    """One command-line argument of a stage, as argparse takes it (``name``: the request field it fills;
    None for a flag read by the stage's own ``request`` function)."""

    flags: tuple[str, ...]
    help: str
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    """One stage in the table: its name and help, its arguments, the request they make, and the module
    whose ``run(request, execution)`` and ``check(request, execution=None)`` it runs (imported when
    used: the command line checks a request before torch or Ray is loaded)."""

    name: str
    help: str
    makes: str  # the kind of folder its --out is (hpcinv.folders.KINDS)
    args: tuple[Arg, ...]
    request: Callable[[Any, list[str]], BaseModel]  # (parsed arguments, key=value overrides) -> request
    module: str  # e.g. "hpcinv.stages.generate"
    ray: str = "none"  # "none"; "default" (Ray unless --in-process); "optional" (Ray given --workers/--address)
    settings: type[BaseModel] | None = None  # a model whose fields are flags too (predict, evaluate)
    bars: bool = True  # it shows progress bars (on a terminal), which --quiet turns off

    def run(self, request: BaseModel, execution: Execution) -> dict:
        return importlib.import_module(self.module).run(request, execution)

    def check(self, request: BaseModel, execution: Execution | None = None, **options: Any) -> Any:
        """Every check that needs no cluster, before anything is written (``options``: the stage's own)."""
        return importlib.import_module(self.module).check(request, execution, **options)
