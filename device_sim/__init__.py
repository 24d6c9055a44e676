"""Simulated homes that publish like real devices: routines, signals, a fleet of MQTT clients.

>>> from device_sim import SimConfig, Simulation
>>> sim = Simulation(SimConfig(elders=3, seed=0, start=1_700_000_000.0))
>>> len([m for m in sim.step(1_700_000_000.0) if m[0].stream == "frame"]) <= 3
True
"""

from device_sim.homes import (
    Motion,
    OkPress,
    SimConfig,
    SimDevice,
    SimElder,
    SimEvent,
    Simulation,
    SosPress,
)
from device_sim.routine import Activity, Posture, daytime

__all__ = [
    "Activity",
    "Motion",
    "OkPress",
    "Posture",
    "SimConfig",
    "SimDevice",
    "SimElder",
    "SimEvent",
    "Simulation",
    "SosPress",
    "daytime",
]
