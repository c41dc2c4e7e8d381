"""Split a message body into the author's own words and what it quotes or forwards.

Rule 5 reads only the author's text (RULES.md): quoted replies and forwarded messages are
other people's words, and a client's own number in a quoted signature is no leak.
"""

from __future__ import annotations

import html
import re

from rolekeeper.detect.addresses import addresses

# A line where other people's text begins: reply headers, forward banners, Outlook blocks.
_CUT = re.compile(
    r"^\s*(?:"
    r"-{2,}\s*(?:original message|forwarded message|пересылаемое сообщение|исходное сообщение"
    r"|начало переадресованного сообщения|weitergeleitete nachricht)[^\n]*"
    r"|begin forwarded message:"
    r"|on\b[^\n]{0,200}\bwrote:\s*"
    r"|[^\n]{0,200}(?:пишет|написал|написала|написал\(а\)):\s*"
    r"|_{10,}\s*"
    r")$",
    re.IGNORECASE | re.MULTILINE,
)
# Every line _CUT matches holds one of these (lower-cased): find them with str.find and try
# _CUT only on their lines; its `[^\n]{0,200}` alternatives make a search over a whole
# body cost a backtracking scan of every line.
_CUT_HINTS = (
    "original message",
    "forwarded message",
    "пересылаемое сообщение",
    "исходное сообщение",
    "начало переадресованного сообщения",
    "weitergeleitete nachricht",
    "wrote:",
    "пишет",
    "написал",
    "_" * 10,
)
# An Outlook-style header block: From: … then Sent:/Date: within the next lines.
_OUTLOOK = re.compile(
    r"^\s*\*?(?:from|от|de|von)\s*:\*?[^\n]*\n(?:[^\n]*\n){0,2}?\s*\*?"
    r"(?:sent|date|отправлено|дата|envoyé|gesendet)\s*:",
    re.IGNORECASE | re.MULTILINE,
)
_FROM_LINE = re.compile(r"^\s*[>\s]*\*?(?:from|от|de|von)\s*:\*?\s*(.+)$", re.I | re.M)
_TAG = re.compile(r"<[^>]+>")
_BLOCKQUOTE = re.compile(r"<blockquote\b.*?</blockquote>", re.I | re.S)
_BREAK = re.compile(r"<(?:br|/p|/div|/tr|/li)\b[^>]*>", re.I)


def split_author_text(body: str) -> tuple[str, str]:
    """(the author's text, the rest). Quoted lines (`>`) never count as the author's."""
    cut = _first_cut_line(body)
    match = _OUTLOOK.search(body)
    if match and match.start() < cut:
        cut = match.start()
    own = "\n".join(line for line in body[:cut].splitlines() if not line.lstrip().startswith(">"))
    return own.strip(), body[cut:]


def _first_cut_line(body: str) -> int:
    """Where _CUT.search(body) starts: its first matching line, moved back over the blank
    lines before it (its leading `\\s*` spans them); len(body) if none."""
    lower = body.lower()
    if len(lower) != len(body):  # a few letters grow when lower-cased: no shortcut
        match = _CUT.search(body)
        return match.start() if match else len(body)
    lines: set[int] = set()
    for hint in _CUT_HINTS:
        at = lower.find(hint)
        while at >= 0:
            line = lower.rfind("\n", 0, at) + 1
            lines.add(line)
            end = lower.find("\n", at)
            at = -1 if end < 0 else lower.find(hint, end)
    for line in sorted(lines):
        if _CUT.match(body, line):
            while line > 0:
                previous = body.rfind("\n", 0, line - 1) + 1
                if body[previous : line - 1].strip():
                    break
                line = previous
            return line
    return len(body)


def carried_senders(rest: str) -> tuple[str, ...]:
    """Addresses on From: lines of quoted or forwarded text."""
    found: dict[str, None] = {}
    for match in _FROM_LINE.finditer(rest):
        for address in addresses(match.group(1)):
            found.setdefault(address, None)
    return tuple(found)


def html_to_text(markup: str) -> str:
    """Enough of HTML → text for reading an author's lines; quoted blocks are dropped."""
    without_quotes = _BLOCKQUOTE.sub("\n", markup)
    return html.unescape(_TAG.sub("", _BREAK.sub("\n", without_quotes)))
