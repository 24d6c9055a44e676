"""The device certification kit: conformance of a real device to the wire contract.

``homecare certify`` (:mod:`.cli`) observes one device's traffic with a real MQTT
subscriber (:mod:`.observer`), stages the operator steps (:mod:`.prompts`: power off
and on, SOS, test falls and look-alikes, events during a broker outage) in one session
(:mod:`.kit`), judges the evidence with the conformance suite (:mod:`.checks`) and
writes a JSON report and an HTML certificate (:mod:`.report`). The simulator's devices
are the reference (:mod:`.reference`); :mod:`.faulty` holds devices that are wrong on
purpose, each failing exactly the checks it should.
"""

__all__ = ["cli"]
"""Modules the rest of the project imports; the others are this package's own."""
