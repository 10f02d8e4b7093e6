"""The command line's error handling: one wrapper around every command (see `videor1.cli`'s docstring)."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import click
import typer
import yaml
from typer.core import TyperGroup

from videor1.config import ConfigError
from videor1.data.media import MediaError
from videor1.data.records import RecordError


class CommandError(Exception):
    """A bad argument found by a command itself (`fail`)."""


#: Errors that are the user's (bad input), reported in one line with exit code 2. ValueError covers bad
#: argument values (ConfigError, RecordError, json.JSONDecodeError and UnicodeDecodeError are ValueErrors
#: too; listed for the reader). ImportError: a missing optional extra (vllm, deepspeed, peft). ConnectionError: a
#: Hub request that failed (`videor1 push`: no network, a missing or wrong token).
USER_ERRORS: tuple[type[BaseException], ...] = (
    CommandError, ConfigError, RecordError, MediaError, FileNotFoundError, FileExistsError, NotADirectoryError,
    IsADirectoryError, PermissionError, ConnectionError, ValueError, yaml.YAMLError, json.JSONDecodeError,
    UnicodeDecodeError, ImportError,
)
DEBUG_ENV = "VIDEOR1_DEBUG"


def one_line(exc: BaseException) -> str:
    """The error's message on one line (an OSError as `<file>: <reason>`)."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    text = str(exc) or type(exc).__name__
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


class GuardedGroup(TyperGroup):
    """The root command group: runs every command inside the one error wrapper (module docstring)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except USER_ERRORS as exc:
            if ctx.params.get("debug"):
                raise
            typer.echo(f"error: {one_line(exc)}", err=True)
            raise typer.Exit(2) from None


class OverridesGroup(TyperGroup):
    """A group whose own callback also takes `key=value` overrides: a first argument that is not one of its
    subcommands is left, with everything after it, in `ctx.args` for the callback."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        super().parse_args(ctx, args)
        attr = "_protected_args" if hasattr(ctx, "_protected_args") else "protected_args"
        protected = getattr(ctx, attr)
        if protected and protected[0] not in self.commands:
            ctx.args = [*protected, *ctx.args]
            setattr(ctx, attr, [])
        return ctx.args


def fail(message: str) -> NoReturn:
    """Stop the command: the wrapper prints `error: <message>` on stderr and exits 2."""
    raise CommandError(message)
