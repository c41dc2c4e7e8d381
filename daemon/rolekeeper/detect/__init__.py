"""Detection: pure rules over parsed message facts and a directory snapshot. No I/O here."""
