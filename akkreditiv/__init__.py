"""The composition root: the ``akkreditiv`` command wires devices, simulator and server."""
