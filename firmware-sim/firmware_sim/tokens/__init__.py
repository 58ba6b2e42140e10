"""Firmware state machines of the simulated tokens."""
