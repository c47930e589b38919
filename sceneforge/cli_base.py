"""Command and group classes that give every SceneForge command the same conventions."""

from __future__ import annotations

import typer
from typer.core import TyperCommand, TyperGroup


class _Conventions:
    """Usage lines and option errors as in most command lines: required arguments bare (typer
    writes ``{RECIPE}``), and 'did you mean' for a misspelt option."""

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:
        pieces = super().collect_usage_pieces(ctx)
        return [piece[1:-1] if piece.startswith("{") and piece.endswith("}") else piece for piece in pieces]

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except Exception as error:  # click's or typer's own NoSuchOption (typer >= 0.26 carries its own click)
            name, possible = getattr(error, "option_name", None), getattr(error, "possibilities", None)
            if name is None or not possible:
                raise
            ctx.fail(f"No such option: {name}; did you mean {' or '.join(sorted(possible))}?")


class SceneForgeCommand(_Conventions, TyperCommand):
    """A command with SceneForge's usage line and option errors."""


class SceneForgeGroup(_Conventions, TyperGroup):
    """A command group with SceneForge's usage line and option errors."""
