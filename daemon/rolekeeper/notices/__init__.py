"""Messages rolekeeper writes: alerts, digests, nudges and (later) transition notices."""
