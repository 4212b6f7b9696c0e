"""Spec source text: decoding, the character check, and positions for error messages."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import SpecError


@dataclass(frozen=True)
class Source:
    text: str
    file: str = "<spec>"

    @property
    def lines(self) -> list[str]:
        return self.text.split("\n")

    def line_text(self, line: int) -> str:
        lines = self.lines
        return lines[line - 1] if 1 <= line <= len(lines) else ""

    def error(self, msg: str, line: int, col: int = 1) -> SpecError:
        return SpecError(msg, file=self.file, line=line, col=max(col, 1),
                         source_line=self.line_text(line))


def decode(data: bytes, file: str) -> Source:
    """Bytes to a Source; a byte sequence that is not UTF-8 is a spec error at that byte."""
    try:
        return Source(data.decode("utf-8"), file)
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        line_start = before.rfind(b"\n") + 1
        col = len(before[line_start:].decode("utf-8", errors="replace")) + 1
        line_bytes = data[line_start:].split(b"\n", 1)[0]
        raise SpecError(f"stray byte 0x{data[exc.start]:02x}: a spec is UTF-8 text",
                        file=file, line=line, col=col,
                        source_line=line_bytes.decode("utf-8", errors="replace")) from None


def read_source(path: str | Path) -> Source:
    path = Path(path)
    return decode(path.read_bytes(), str(path))
