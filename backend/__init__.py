"""The Entropic OS backend: the living image of personas, served over ZeroMQ."""

__version__ = "0.1.0"
