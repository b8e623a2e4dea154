"""The Ray session of a driver: join a running cluster (``--address`` or ``RAY_ADDRESS``), failing in
seconds with one line when it cannot be reached, or start a local instance sized to the machine; and
the setup every Ray worker process runs at start (:func:`quiet_worker`)."""

from __future__ import annotations

import logging
import os
import socket

import ray

from hpcinv.errors import HpcinvError

log = logging.getLogger(__name__)


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast with one clear line instead of Ray's long reconnect loop."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise HpcinvError(f"Ray address {address!r} is not of the form HOST:PORT (or 'auto' / 'local')")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise HpcinvError(f"cannot reach a Ray cluster at {address!r}: {exc.strerror or exc}") from None


class _DropDefaultTokenNotice(logging.Filter):
    """Ray announces at every local start that it enabled token authentication; that is what we want."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_DropDefaultTokenNotice())


# Ray Train's placement-group cleaner asks the State API (served by the dashboard, which hpcinv does not
# start) whether the controller lives, and warns every few seconds that it cannot: noise, not a problem.
NOISY_LOGGERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


def quiet_worker() -> None:
    """Run in every Ray worker process at start (``worker_process_setup_hook``): the State API's clients
    find this cluster (not another Ray instance on the same machine, which made them fail with a
    traceback), and the loggers in :data:`NOISY_LOGGERS` print errors only."""
    os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def init_ray(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Join ``address`` (or ``RAY_ADDRESS``), or start a local instance sized to this machine."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address not in ("local", "auto"):
        _check_reachable(address)
    kwargs = dict(
        include_dashboard=False,
        log_to_driver=True,
        configure_logging=False,
        runtime_env={"worker_process_setup_hook": "hpcinv.distributed.session.quiet_worker"},
    )
    if not address or address == "local":
        ray.init(num_cpus=num_cpus or os.cpu_count(), **kwargs)
    else:
        ray.init(address=address, **kwargs)


def shutdown() -> None:
    ray.shutdown()
