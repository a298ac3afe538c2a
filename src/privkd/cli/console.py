"""The one console every command prints to, and the progress printer handed to long runs.

Kept apart from the app so that any command module can print without importing the app
(which imports every command module).
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape

__all__ = ["console", "show_progress"]

console = Console(width=None if sys.stdout.isatty() else 240)  # logs and pipes get the whole table unwrapped


def show_progress(message: str) -> None:
    """One progress line; escaped, because row names such as ``pkdot[beta=6.0]`` look like rich markup."""
    console.print(f"[cyan]▶[/] {escape(message)}")
