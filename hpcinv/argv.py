"""The command-line convention shared by ``hpcinv`` and ``python -m launch.*``: options as usual, and
config overrides ``key.sub=value`` anywhere on the line (before or after the options)."""

from __future__ import annotations

import argparse


def parse_with_overrides(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, with the leftover ``key=value`` words appended to ``args.overrides``.

    A leftover option, a word without ``=``, or any leftover for a command that takes no overrides is
    the parser's usual one-line error (exit 2)."""
    args, extra = parser.parse_known_args(argv)
    options = [word for word in extra if word.startswith("-")]
    if options:
        parser.error(f"unrecognized arguments: {' '.join(options)}")
    if extra and not hasattr(args, "overrides"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    words = [word for word in extra if "=" not in word]
    if words:
        command = getattr(args, "command", None)
        where = f"'{parser.prog} {command}'" if command else f"'{parser.prog}'"
        parser.error(f"{words[0]!r} is neither an option of {where} nor an override of the form key.sub=value")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args
