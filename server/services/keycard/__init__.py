"""Legacy key cards as credentials: the server's pepper, the stored card, issuance and
activation (``service``), and the key-card login factor."""
