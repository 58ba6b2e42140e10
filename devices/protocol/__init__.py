"""Pure codecs for token protocols, with no I/O; shared by the drivers and the simulator."""
