"""Private servers the integration tests start for themselves (Dovecot, an SMTP sink)."""
