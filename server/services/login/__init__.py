"""Logins: the gate every step of a login passes (``gate``)."""
