"""``python -m akkreditiv`` runs the same command as ``akkreditiv``."""

from akkreditiv.cli import app

app(prog_name="akkreditiv")
