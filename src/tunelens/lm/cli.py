"""Top-level LM commands (`tunelens models`, `tunelens pretrain`)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the LM commands to the main app."""
