"""The ``homecare`` command: one entry point, a subcommand per job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from homecare import contract

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
contract_app = typer.Typer(no_args_is_help=True, help="The wire contract devices build against.")
app.add_typer(contract_app, name="contract")


@contract_app.command("export")
def contract_export(
    folder: Annotated[Path, typer.Argument(help="Folder to write the JSON Schemas into.")],
) -> None:
    """Write the JSON Schema of every payload and the topic scheme into FOLDER."""
    folder.mkdir(parents=True, exist_ok=True)
    for stream, schema in contract.json_schemas().items():
        (folder / f"{stream}.schema.json").write_text(json.dumps(schema, indent=2) + "\n")
    (folder / "topics.json").write_text(json.dumps(contract.topic_scheme(), indent=2) + "\n")
    typer.echo(f"wrote {len(contract.PAYLOADS)} payload schemas and topics.json to {folder}")
