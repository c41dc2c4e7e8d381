"""Private local servers (Dovecot, an SMTP sink) for `rolekeeper demo`, the tests and benches.

Never used by the service itself: they listen on 127.0.0.1 only, on free ports, with
throw-away data in a temp dir.
"""
