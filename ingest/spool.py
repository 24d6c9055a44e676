"""A durable on-disk spool of line-protocol batches, for when InfluxDB is unreachable.

Ingest acknowledges a message to the broker only once its points are in InfluxDB
or here, fsynced. Batches are replayed oldest first when InfluxDB returns; a batch
is deleted only after InfluxDB accepted it. Point timestamps come from payloads, so
a batch written twice (a crash between write and delete) overwrites itself.

>>> import tempfile
>>> spool = Spool(Path(tempfile.mkdtemp()))
>>> spool.append(["bed,elder=e1 hr=60i 1"])
>>> [batch.lines for batch in spool]
[b'bed,elder=e1 hr=60i 1']
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class SpooledBatch:
    path: Path
    lines: bytes

    def done(self) -> None:
        """InfluxDB has the batch: forget it."""
        self.path.unlink(missing_ok=True)


class Spool:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        for partial in self.folder.glob("*.tmp"):
            partial.unlink()  # a write that crashed before its rename was never acknowledged
        self._next = max((int(p.stem) for p in self._files()), default=0) + 1

    def _files(self) -> list[Path]:
        return sorted(self.folder.glob("*.lp"))

    def append(self, lines: Sequence[str]) -> None:
        """Store a batch durably (write, fsync, rename, fsync the folder)."""
        final = self.folder / f"{self._next:012d}.lp"
        tmp = final.with_suffix(".tmp")
        with tmp.open("wb") as f:
            f.write("\n".join(lines).encode())
            f.flush()
            os.fsync(f.fileno())
        tmp.rename(final)
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._next += 1

    def __iter__(self) -> Iterator[SpooledBatch]:
        """The spooled batches, oldest first."""
        for path in self._files():
            yield SpooledBatch(path, path.read_bytes())

    def __len__(self) -> int:
        return len(self._files())

    def __bool__(self) -> bool:
        return any(self.folder.glob("*.lp"))
