"""A small site for the proactive-care tests: a registry of two sites, a register with
workers and some history, and the page's server running on a loopback port."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from argon2 import PasswordHasher

from care.plan import signs_rows
from care.policy import VisitPolicy
from care.register import Register
from care.signs import WINDOW_DAYS, Days, assess
from care.web import CareServer
from device_sim.decline import STEPS
from escalation.registry import Registry

DAY = 86400.0
PASSWORDS = {"maria": "maria's long passphrase", "sam": "sam's long passphrase"}


def registry(coordinator_url: str = "http://127.0.0.1:9/hook") -> Registry:
    contacts = [
        {"id": "arc", "name": "ARC", "role": "call_centre",
         "channels": [{"kind": "call_centre", "address": "http://127.0.0.1:9/arc"}]},
        {"id": "coord", "name": "Coordinator", "role": "supervisor",
         "channels": [{"kind": "webhook", "address": coordinator_url}]},
    ]  # fmt: skip
    elders = [
        {"id": "anna", "display_name": "Anna Berg", "site": "north", "address": "1 Elm Row",
         "care_level": 4, "living_alone": True},
        {"id": "ben", "display_name": "Ben Cole", "site": "north", "address": "2 Elm Row"},
        {"id": "carl", "display_name": "Carl Dahl", "site": "north", "address": "3 Elm Row"},
        {"id": "dora", "display_name": "Dora Eng", "site": "south", "address": "9 Oak Lane",
         "care_level": 3, "living_alone": True},
    ]  # fmt: skip
    return Registry.model_validate({
        "provider": {"call_centre": "arc", "coordinator": "coord"},
        "contacts": contacts, "elders": elders,
    })  # fmt: skip


def walks_half(elders: tuple[str, ...], who: str) -> Days:
    """Five weeks of steps; ``who`` walks half as much in the last one."""
    steps = np.random.default_rng(1).normal(4000, 250, (len(elders), WINDOW_DAYS))
    steps[elders.index(who), -7:] *= 0.5
    return Days(elders, 0.0, {STEPS: steps})


def make_register(path: Path, now: float) -> Register:
    """Workers of both sites; Anna last visited 40 days ago, Carl called 2 days ago, Ben
    walking half as much this week."""
    # Argon2id as in production, with less memory and one pass: the tests log in often.
    reg = Register(path, hasher=PasswordHasher(time_cost=1, memory_cost=8192))
    reg.add_worker("maria", "north", PASSWORDS["maria"])
    reg.add_worker("sam", "south", PASSWORDS["sam"])
    reg.record(site="north", elder="anna", worker="maria", kind="visit", outcome="all_well",
               at=now - 40 * DAY)  # fmt: skip
    reg.record(site="north", elder="carl", worker="maria", kind="call", outcome="all_well",
               at=now - 2 * DAY)  # fmt: skip
    reg.store_signs("north", now, signs_rows(assess(walks_half(("anna", "ben", "carl"), "ben"))))
    return reg


@contextmanager
def serving(reg: Register, reg_file: Registry, *, ttl_s: float = 3600.0) -> Iterator[str]:
    """The page's server on a free loopback port, in a thread of its own; its base URL."""
    server = CareServer(reg, lambda: reg_file, VisitPolicy(), session_ttl_s=ttl_s)
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start("127.0.0.1", 0))
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10), "the care page did not start"
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def now() -> float:
    return time.time()
