"""The user-facing error types. The CLI prints any :class:`HpcinvError` as one line and exits 2.

They live below every stage (config, store, generate, train, evaluate) so any layer can raise them.
"""

from __future__ import annotations


class HpcinvError(ValueError):
    """A user-facing error: the CLI prints its message as one line and exits non-zero."""


class ConfigError(HpcinvError):
    """A config file or override is unreadable, has unknown keys, or has values of the wrong type."""


class DataError(HpcinvError):
    """Stored data is missing, damaged or not what its manifest says. Deterministic: retrying the same
    read gives the same error, so training stops instead of restarting its workers."""

    @staticmethod
    def message_of(exc: BaseException) -> str:
        """The original one-line message, also when a DataLoader worker re-raised it with a traceback
        ("Caught DataError in DataLoader worker process 0. Original Traceback ... DataError: <msg>")."""
        text = str(exc)
        marker = f"{DataError.__name__}: "
        last = [line for line in text.splitlines() if line.strip()]
        for line in reversed(last):
            if marker in line:
                return line.split(marker, 1)[1].strip()
        return last[0] if last else type(exc).__name__


class TrainingFailed(RuntimeError):
    """Training failed for a reason that is not the user's input (a crash Ray Train's restarts did not
    cure): not an :class:`HpcinvError`, so the CLI keeps its traceback."""


class LockedError(HpcinvError):
    """A folder is held by another hpcinv process."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM: the CLI prints one line and exits 128 + the signal number.

    A ``BaseException`` (like ``KeyboardInterrupt``) so ordinary ``except Exception`` clauses let it
    through."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message)
        self.signum, self.message = signum, message
