"""The production image holds no harness (Dockerfile): the ``homecare`` command must not need it.

Each check runs the command in a fresh interpreter where importing ``harness`` fails, as
it would in the image, and where no benchmark module may load until a benchmark runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

WITHOUT_HARNESS = """
import sys


class NotInTheImage:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "harness":
            raise ModuleNotFoundError(f"No module named {name!r} (not in the image)", name=name)
        return None


sys.meta_path.insert(0, NotInTheImage())
from cli.main import app

heavy = sorted(m for m in sys.modules if m.startswith("bench.") and m != "bench.cli")
assert not heavy, f"benchmarks loaded by the command line: {heavy}"
app()
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["bench", "--help"],
        ["bench", "ingest", "--help"],
        ["broker", "--help"],
        ["contract", "export"],
    ],
    ids=lambda a: " ".join(a),
)
def test_the_command_runs_without_the_harness(args: list[str], tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if args == ["contract", "export"]:
        args = [*args, str(tmp_path / "schemas")]
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_HARNESS, *args],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "harness" not in result.stderr
    if args[0] == "contract":
        assert (tmp_path / "schemas" / "topics.json").exists()
    else:
        assert "Usage" in result.stdout


def test_the_blocker_does_block_the_harness(tmp_path: Path) -> None:
    """The check above would pass vacuously if the blocker let ``harness`` through."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    script = WITHOUT_HARNESS.replace("app()", "import harness.demo")
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "No module named 'harness' (not in the image)" in result.stderr
