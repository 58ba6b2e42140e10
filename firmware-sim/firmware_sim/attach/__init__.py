"""Attach simulated tokens where hardware would be: pcscd's vpcd reader, a simulated USB bus."""
