"""``homecare care …``: the signs' evaluation, the weekly plan, the visit register, reports.

Each command imports what it needs when it runs, so ``homecare --help`` stays fast.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

app = typer.Typer(
    no_args_is_help=True, help="Proactive care: who to visit or call, the visit register."
)


@app.command("evaluate")
def evaluate_command(
    elders: Annotated[int, typer.Option(min=20, help="Simulated elders.")] = 400,
    days: Annotated[int, typer.Option(min=49, help="Simulated days.")] = 126,
    seed: Annotated[int, typer.Option(help="The cohort's seed.")] = 0,
    every: Annotated[int, typer.Option(min=1, max=7, help="Days between runs.")] = 7,
) -> None:
    """Measure the signs of decline on a simulated cohort (gradual declines, hospital
    stays, stable elders): the share of declines flagged within 14 days, and of stable
    elders flagged in a month. Exit 1 when a target is missed."""
    from care.evaluate import evaluate

    result = evaluate(elders=elders, days=days, seed=seed, every=every)
    typer.echo(json.dumps(result.as_dict(), indent=2))
    if not result.met():
        raise typer.Exit(1)
