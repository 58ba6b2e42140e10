"""The server's vocabulary: levels, kinds, states and channels, and the domain errors."""
