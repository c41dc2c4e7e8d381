"""rolekeeper: keeps client-facing mail and phone channels bound to roles, not people."""

__version__ = "0.1.0"
