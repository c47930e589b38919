"""Errors that reach the user as a message, never as a traceback.

Only mistakes in the user's input are ``UserError``; a broken invariant inside the library is an
ordinary exception (``ValueError``, ``TypeError``, ...) and shows its traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MAX_LISTED = 50  # problems printed by one error; the rest are counted


@dataclass(frozen=True)
class SourcePosition:
    """Where in a user's file a mistake is: 1-based line and column, and the field's dotted path."""

    file: str
    line: int | None = None
    column: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = self.file + "".join(f":{n}" for n in (self.line, self.column) if n is not None)
        return f"{where}: {self.field}" if self.field else where


class UserError(Exception):
    """A mistake in the user's input (recipe, paths, options): the CLI prints it and exits 2.

    ``sources`` are where the mistakes are, when known; each line of the message starts with one.
    """

    def __init__(self, message: str, *, source: SourcePosition | None = None) -> None:
        super().__init__(f"{source}: {message}" if source else message)
        self.sources: tuple[SourcePosition, ...] = () if source is None else (source,)

    @classmethod
    def listing(cls, problems: Sequence[tuple[SourcePosition, str]], total: int | None = None) -> UserError:
        """One error for several located problems, a line each (``SOURCE: message``): the first
        ``MAX_LISTED`` of them, then how many more there are (of ``total``, when more were found
        than are given)."""
        total = len(problems) if total is None else total
        lines = [f"{source}: {message}" for source, message in problems[:MAX_LISTED]]
        if total > len(lines):
            lines.append(f"... and {total - len(lines)} more problem(s)")
        error = cls("\n".join(lines))
        error.sources = tuple(source for source, _ in problems)
        return error


class RenderFailure(Exception):
    """Frames could not be rendered; the message names them and where their errors are."""


class StorageError(Exception):
    """The store could not be written (full disk, lost mount): frames written before stay valid."""
