"""``homecare care bench``: the register's page and API with a site of thousands of elders.

A registry of ``elders`` on one site (a fifth living alone, every care level), a year of
visits and calls for half of them, signs for one in twenty; the page's server on a
loopback port, one worker logged in; then the page, the plan API and a recorded visit,
each timed ``rounds`` times (median and worst, in ms).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from care.plan import signs_rows
from care.policy import VisitPolicy
from care.register import Register
from care.signs import Assessment, Sign
from care.web import CareServer
from escalation.registry import Registry

PASSWORD = "bench passphrase"


def _registry(n: int) -> Registry:
    return Registry.model_validate({
        "provider": {"call_centre": "arc"},
        "contacts": [{"id": "arc", "name": "ARC", "role": "call_centre",
                      "channels": [{"kind": "call_centre", "address": "http://127.0.0.1:9/"}]}],
        "elders": [{"id": f"e{i:05d}", "display_name": f"Elder {i}", "site": "big",
                    "address": f"{i} Long Road", "care_level": 1 + i % 4,
                    "living_alone": i % 5 == 0} for i in range(n)],
    })  # fmt: skip


def bench(elders: int = 5000, rounds: int = 5) -> dict[str, Any]:
    registry = _registry(elders)
    now = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        register = Register(Path(tmp) / "care.db")
        register.add_worker("w1", "big", PASSWORD)
        for i in range(0, elders, 2):
            register.record(site="big", elder=f"e{i:05d}", worker="w1",
                            kind="visit" if i % 4 else "call", outcome="all_well",
                            at=now - (i % 365) * 86400.0)  # fmt: skip
        found = Assessment(tuple(e.id for e in registry.elders), now)
        for e in found.elders[::20]:
            found.signs.append(Sign(e, "activity", "steps", 1500, 3000, -1500, 6.0))
            found.score[e] = 6.0
        register.store_signs("big", now, signs_rows(found))
        server = CareServer(register, lambda: registry, VisitPolicy())
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(server.start("127.0.0.1", 0))
            ready.set()
            loop.run_forever()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        ready.wait(30)
        timings: dict[str, list[float]] = {"page": [], "plan_api": [], "record_visit": []}
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=60) as http:
                csrf = http.post("/api/login", json={"name": "w1", "password": PASSWORD}).json()[
                    "csrf"
                ]
                size = 0
                for k in range(rounds):
                    t = time.perf_counter()
                    page = http.get("/")
                    timings["page"].append(time.perf_counter() - t)
                    size = len(page.content)
                    t = time.perf_counter()
                    http.get("/api/plan")
                    timings["plan_api"].append(time.perf_counter() - t)
                    t = time.perf_counter()
                    http.post("/api/visits", headers={"X-CSRF-Token": csrf},
                              json={"elder": f"e{k:05d}", "kind": "visit",
                                    "outcome": "all_well"})  # fmt: skip
                    timings["record_visit"].append(time.perf_counter() - t)
        finally:
            asyncio.run_coroutine_threadsafe(server.close(), loop).result(30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)
            loop.close()
            register.close()
    return {
        "elders": elders,
        "rounds": rounds,
        "page_bytes": size,
        **{
            f"{name}_ms": {"median": round(1000 * statistics.median(v), 1),
                           "max": round(1000 * max(v), 1)}
            for name, v in timings.items()
        },
    }  # fmt: skip
