"""Escalation: alerts → the ladder → the call centre, families and apps."""
