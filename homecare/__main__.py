"""``python -m homecare`` runs the ``homecare`` command."""

from homecare.cli import app

app()
