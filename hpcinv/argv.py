"""The command-line convention shared by ``hpcinv`` and ``python -m launch.*``: options as usual, and
config overrides ``key.sub=value`` anywhere on the line (before or after the options)."""

from __future__ import annotations

import argparse
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError

from hpcinv.errors import HpcinvError


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one ``PREFIX: error:`` line like every other error (``--help``
    shows the usage)."""

    prefix = "hpcinv"

    def error(self, message: str):
        where = self.prog.removeprefix(self.prefix).strip()
        self.exit(2, f"{self.prefix}: error: {where + ': ' if where else ''}{message} (see {self.prog} --help)\n")


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


def whole(minimum: int):
    """An argparse type: a whole number >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= {minimum}")
        return value

    return parse


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def _flag_type(annotation: object) -> type:
    """The scalar type a flag parses: int or float (``float | None`` too), otherwise str."""
    for kind in (int, float):
        if annotation is kind or kind in get_args(annotation):
            return kind
    return str


def add_model_flags(
    group: Any, model: type[BaseModel], *, skip: tuple[str, ...] = (), whole_numbers: bool = False
) -> None:
    """One flag per field of ``model`` (``--cpus-per-node`` for ``cpus_per_node``), with the field's
    default and description: a bool is a switch, a choice lists its values, a list field is a repeatable
    flag; with ``whole_numbers`` a whole number with a lower bound is checked as argparse parses it.
    ``group``: a parser or argument group."""
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        shown = f" (default {field.default})" if field.default not in (None, [], False) else ""
        help = f"{field.description}{shown}".replace("%", "%%")
        if get_origin(field.annotation) is list:
            group.add_argument(_flag(name), action="append", default=[], metavar="VALUE", help=field.description)
        elif field.annotation is bool:
            group.add_argument(_flag(name), action="store_true", default=field.default, help=help)
        elif get_origin(field.annotation) is Literal:
            group.add_argument(_flag(name), choices=get_args(field.annotation), default=field.default, help=help)
        else:
            kind = _flag_type(field.annotation)
            low = next((m.ge for m in field.metadata if isinstance(getattr(m, "ge", None), int)), None)
            parse = whole(low) if whole_numbers and kind is int and low is not None else kind
            group.add_argument(_flag(name), type=parse, default=field.default, help=help)


def model_from_flags(model: type[BaseModel], args: argparse.Namespace, **fixed: Any) -> Any:
    """``model`` from the flags :func:`add_model_flags` made (and ``fixed`` values), validated: a bad
    value is one line naming the flag and what is valid."""
    values = {name: getattr(args, name) for name in model.model_fields if hasattr(args, name)} | fixed
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0])
        raise HpcinvError(f"{_flag(name)} {values.get(name)} is not valid: {err['msg'].lower()}") from None
