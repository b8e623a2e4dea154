"""W&B run tracking from rank 0 only.

``tracking.mode``: ``online`` (falls back to ``offline`` when no ``WANDB_API_KEY`` is set),
``offline`` (files under ``RUN_DIR/wandb``, upload later with ``wandb sync``) or ``disabled``.
The W&B run id is derived from the run's folder, so a resumed run continues the same W&B run.
The API key is read by wandb from the environment; hpcinv never logs or stores it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

from hpcinv.config import TrackingConfig

log = logging.getLogger(__name__)


def run_id(run_dir: str | os.PathLike) -> str:
    """A stable W&B id for a run folder: readable name + short hash of the absolute path."""
    path = str(Path(run_dir).resolve())
    name = re.sub(r"[^A-Za-z0-9_-]", "-", Path(path).name)[:40]
    return f"{name}-{hashlib.sha1(path.encode()).hexdigest()[:8]}"


def resolve_mode(mode: str) -> str:
    if mode == "online" and not os.environ.get("WANDB_API_KEY"):
        log.warning("tracking.mode=online but WANDB_API_KEY is not set: logging offline (wandb sync later)")
        return "offline"
    return mode


class Tracker:
    """A thin wrapper so the training loop never touches wandb when tracking is off or rank != 0."""

    def __init__(self, cfg: TrackingConfig, run_dir: str | os.PathLike, config: dict, enabled: bool):
        self.run = None
        self.mode = resolve_mode(cfg.mode)
        if not enabled or self.mode == "disabled":
            return
        import wandb

        self._wandb = wandb
        wandb_dir = Path(run_dir) / "wandb"
        wandb_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=cfg.project, entity=cfg.entity, name=Path(run_dir).name, id=run_id(run_dir),
                              resume="allow", dir=str(Path(run_dir)), mode=self.mode, config=config,
                              settings=wandb.Settings(console="off", silent=True))
        self.run.define_metric("epoch")
        self.run.define_metric("val/*", step_metric="epoch")

    @property
    def active(self) -> bool:
        return self.run is not None

    def log(self, metrics: dict, step: int) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def image(self, key: str, figure, step: int) -> None:
        if self.run is not None:
            self.run.log({key: self._wandb.Image(figure)}, step=step)

    def artifact(self, name: str, path: str | os.PathLike, metadata: dict) -> None:
        if self.run is not None:
            art = self._wandb.Artifact(name, type="model", metadata=metadata)
            art.add_file(str(path))
            self.run.log_artifact(art, aliases=["best", f"epoch-{metadata.get('epoch')}"])

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
