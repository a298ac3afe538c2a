"""``python -m privkd``: the command line (also how data-parallel workers re-launch it)."""

from privkd.cli import app

app(prog_name="privkd")
