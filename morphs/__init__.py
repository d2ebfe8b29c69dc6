"""Morphs: widgets that render state and announce intent as typed commands."""
