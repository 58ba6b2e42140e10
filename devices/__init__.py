"""Host side of akkreditiv: find physical tokens and talk to them. Imports no server code."""
