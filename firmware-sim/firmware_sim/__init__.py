"""Byte-exact simulators of every token, attached where hardware would be."""
