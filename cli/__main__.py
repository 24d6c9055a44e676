"""``python -m cli`` runs the ``homecare`` command."""

from cli.main import app

app()
