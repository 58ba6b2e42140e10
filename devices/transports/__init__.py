"""Transports that move protocol bytes to real (or simulated) tokens."""
