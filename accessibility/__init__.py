"""Speech and spoken guidance so that every token interaction can be done without sight."""
