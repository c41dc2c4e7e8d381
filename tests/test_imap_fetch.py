"""The FETCH reader on answers Dovecot does not give in the tests' usual traffic."""

from __future__ import annotations

import io

import pytest
from imapclient.exceptions import IMAPClientError

from rolekeeper.backends.imap import _read_fetch

HEADER = b"BODY[HEADER.FIELDS (FROM)]"


class Wire:
    """imaplib's readline()/read() over scripted server bytes."""

    def __init__(self, data: bytes) -> None:
        self._file = io.BytesIO(data)

    def readline(self) -> bytes:
        return self._file.readline()

    def read(self, size: int) -> bytes:
        return self._file.read(size)


def test_usual_unsolicited_and_unusual_shapes() -> None:
    wire = Wire(
        b"* 3 EXISTS\r\n"
        b"* 1 FETCH (UID 7 " + HEADER + b" {12}\r\nFrom: a@b.c\n)\r\n"
        b"* 2 FETCH (FLAGS (\\Seen) UID 8 " + HEADER + b" {4}\r\nxy\r\n)\r\n"
        # The literal before the UID: imapclient's parser takes it.
        b"* 3 FETCH (" + HEADER + b" {5}\r\nabcde UID 9)\r\n"
        # A section given as a quoted string, and a message the command did not ask for.
        b"* 4 FETCH (UID 10 " + HEADER + b' "q")\r\n'
        b"* 5 FETCH (UID 99 " + HEADER + b" {1}\r\nz)\r\n"
        b"A001 OK Fetch completed.\r\n"
    )
    got = _read_fetch(wire, b"A001", {7, 8, 9, 10}, b"BODY[HEADER")
    assert sorted((f.uid, f.data) for f in got) == [
        (7, b"From: a@b.c\n"),
        (8, b"xy\r\n"),
        (9, b"abcde"),
        (10, b"q"),
    ]


def test_a_failed_fetch_and_a_dropped_connection_raise() -> None:
    with pytest.raises(IMAPClientError, match="NO"):
        _read_fetch(Wire(b"A002 NO [SERVERBUG] oops\r\n"), b"A002", {1}, b"BODY[")
    with pytest.raises(IMAPClientError, match="closed"):
        _read_fetch(Wire(b"* 1 FETCH (UID 1 BODY[] {3}\r\nabc)\r\n"), b"A003", {1}, b"BODY[")
