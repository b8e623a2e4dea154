"""W&B run tracking from rank 0 only; monitoring never costs the run.

``tracking.mode``: ``online`` (falls back to ``offline`` when no ``WANDB_API_KEY`` is set, or when the
driver cannot reach the W&B server within ``tracking.init_timeout_s``), ``offline`` (files under
``RUN_DIR/wandb``, upload later with ``wandb sync``) or ``disabled``. On the rank, ``wandb.init`` is
bounded by the same timeout and falls back to offline; any later W&B error turns tracking off with
one warning instead of failing the step (which Ray Train would retry with the whole worker group).
The W&B run id is derived from the run's folder, so a resumed run continues the same W&B run. The API
key is read by wandb from the environment; hpcinv never logs or stores it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from hpcinv.config import TrackingSection

log = logging.getLogger(__name__)

DEFAULT_SERVER = "https://api.wandb.ai"

Mode = Literal["online", "offline", "disabled"]


def run_id(run_dir: str | os.PathLike) -> str:
    """A stable W&B id for a run folder: readable name + short hash of the absolute path."""
    path = str(Path(run_dir).resolve())
    name = re.sub(r"[^A-Za-z0-9_-]", "-", Path(path).name)[:40]
    return f"{name}-{hashlib.sha1(path.encode()).hexdigest()[:8]}"


def sync_hint(run_dir: str | os.PathLike) -> str:
    return f"upload later with `wandb sync {Path(run_dir) / 'wandb'}/offline-run-*`"


def resolve_mode(mode: Mode) -> Mode:
    if mode == "online" and not os.environ.get("WANDB_API_KEY"):
        log.warning("tracking.mode=online but WANDB_API_KEY is not set: logging offline (wandb sync later)")
        return "offline"
    return mode


def server_unreachable(timeout_s: float) -> str | None:
    """Why the W&B server (``WANDB_BASE_URL``) cannot be reached in ``timeout_s``, or None if it answers
    (any HTTP status counts: the server is there)."""
    url = os.environ.get("WANDB_BASE_URL", DEFAULT_SERVER)
    try:
        urllib.request.urlopen(url, timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{url} did not answer within {timeout_s:g} s ({reason})"
    return None


def effective_mode(cfg: TrackingSection, run_dir: str | os.PathLike) -> Mode:
    """The mode the ranks will use: checked once, by the driver, before any worker starts."""
    mode = resolve_mode(cfg.mode)
    if mode == "online":
        why = server_unreachable(cfg.init_timeout_s)
        if why:
            log.warning(
                "W&B server unreachable: %s; logging offline to %s; %s",
                why,
                Path(run_dir) / "wandb",
                sync_hint(run_dir),
            )
            return "offline"
    return mode


class Tracker:
    """A thin wrapper so the training loop never touches wandb when tracking is off or rank != 0, and
    never fails because of it."""

    def __init__(self, cfg: TrackingSection, run_dir: str | os.PathLike, config: dict, enabled: bool):
        self.run: Any | None = None  # the wandb Run (wandb is typed as Any here); None while tracking is off
        self.run_dir = Path(run_dir)
        self.mode = resolve_mode(cfg.mode)
        if not enabled or self.mode == "disabled":
            return
        import wandb

        self._wandb = wandb
        (self.run_dir / "wandb").mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = dict(
            project=cfg.project,
            entity=cfg.entity,
            name=self.run_dir.name,
            id=run_id(run_dir),
            resume="allow",
            dir=str(self.run_dir),
            config=config,
        )
        settings = dict(console="off", silent=True, init_timeout=cfg.init_timeout_s)
        try:
            self.run = wandb.init(mode=self.mode, settings=wandb.Settings(**settings), **kwargs)
        except Exception as exc:
            if self.mode != "online":
                self.warn(f"W&B could not start ({exc}); training goes on without tracking")
                return
            self.warn(
                f"W&B online init failed ({' '.join(str(exc).split())[:200]}); logging offline to "
                f"{self.run_dir / 'wandb'}; {sync_hint(self.run_dir)}"
            )
            self.mode = "offline"
            with contextlib.suppress(Exception):
                wandb.teardown()  # the failed init leaves the run id taken in this process
            try:
                self.run = wandb.init(mode="offline", settings=wandb.Settings(**settings), **kwargs)
            except Exception as exc2:
                self.warn(f"W&B could not start offline either ({exc2}); training goes on without tracking")
                return
        self._call(lambda run: (run.define_metric("epoch"), run.define_metric("val/*", step_metric="epoch")))

    @property
    def active(self) -> bool:
        return self.run is not None

    def warn(self, message: str) -> None:
        log.warning("tracking: %s", message)

    def _call(self, fn: Callable[[Any], object]) -> None:
        """Run a W&B call on the run; an error turns tracking off for the rest of the run, with one warning."""
        if self.run is None:
            return
        try:
            fn(self.run)
        except Exception as exc:
            self.warn(f"W&B failed ({' '.join(str(exc).split())[:200]}); tracking is off for the rest of this run")
            run, self.run = self.run, None
            with contextlib.suppress(Exception):
                run.finish(exit_code=1)

    def log(self, metrics: dict, step: int) -> None:
        self._call(lambda run: run.log(metrics, step=step))

    def image(self, key: str, figure, step: int) -> None:
        self._call(lambda run: run.log({key: self._wandb.Image(figure)}, step=step))

    def artifact(self, name: str, path: str | os.PathLike, metadata: dict) -> None:
        def upload(run) -> None:
            art = self._wandb.Artifact(name, type="model", metadata=metadata)
            art.add_file(str(path))
            run.log_artifact(art, aliases=["best", f"epoch-{metadata.get('epoch')}"])

        self._call(upload)

    def finish(self) -> None:
        self._call(lambda run: run.finish())
        self.run = None
