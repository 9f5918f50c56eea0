"""Text files as people have them: UTF-8 with or without a byte-order mark, Windows (CRLF) or Unix line ends,
a last line with or without its newline all read as the same lines. UTF-16 (or UTF-32) text and bytes that are
not UTF-8 are refused with the file and line, rather than read as garbage."""

from __future__ import annotations

import codecs
from pathlib import Path

from xlp.errors import XlpError

WIDE_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)  # UTF-32's marks begin with UTF-16 LE's


def _wide(path: Path | str, line: int, why: str) -> XlpError:
    return XlpError(f"{path}:{line}: {why}: UTF-16 (or UTF-32) text; xlp reads UTF-8: convert the file "
                    f"(e.g. iconv -f UTF-16 -t UTF-8)")


def decode(raw: bytes, path: Path | str, first_line: int = 1) -> str:
    """The UTF-8 text of a file's bytes, or of a piece of it that begins on line `first_line`; a byte-order
    mark at the start of the file is no text. Errors name the file and the line."""
    if first_line == 1:
        if raw.startswith(WIDE_BOMS):
            raise _wide(path, 1, "a UTF-16 byte-order mark")
        raw = raw.removeprefix(codecs.BOM_UTF8)
    nul = raw.find(b"\0")
    if nul >= 0:  # never in UTF-8 text; every other byte of UTF-16 text of Latin script
        raise _wide(path, first_line + raw.count(b"\n", 0, nul), "a NUL byte")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first_line + raw.count(b"\n", 0, e.start)
        raise XlpError(f"{path}:{line}: not UTF-8 ({e.reason} at byte {e.start})") from None


def lines(text: str) -> list[str]:
    """A text's lines: split at line feeds only (a form or a token may hold U+2028, U+0085 or another
    separator that str.splitlines would cut at), each line's carriage return removed, and no empty line
    after a final newline."""
    out = text.split("\n")
    if out and out[-1] == "":
        out.pop()
    return [line.removesuffix("\r") for line in out]


def read_lines(path: Path | str, what: str) -> list[str]:
    """The lines of a UTF-8 text file (see `lines`); `what` names the spec key an unreadable file is for."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise XlpError(f"{what}: cannot read {path}: {e.strerror}") from None
    return lines(decode(raw, path))
