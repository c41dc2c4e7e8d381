"""Transitions (departure, rotation): a stored, resumable sequence of steps."""
