"""The errors rnncc raises at its users.

A spec error always points at a place in the spec: file, line, column, the source line and a caret,
in the `FILE:LINE:COL: message` form that editors and terminals turn into links.
"""
from __future__ import annotations


_WIDTH = 100  # widest source excerpt shown under an error


class SpecError(ValueError):
    """A cell spec is malformed. `.file`, `.line`, `.col` (1-based) say where, `.msg` what."""

    def __init__(self, msg: str, *, file: str = "<spec>", line: int = 1, col: int = 1,
                 source_line: str | None = None, calls: tuple = ()):
        self.msg = msg
        self.file = file
        self.line = line
        self.col = col
        self.source_line = source_line
        # An error inside a function of the spec (`def`): the calls that led there, innermost
        # first, each (function name, line, col, source line); shown under the error.
        self.calls = tuple(calls)
        super().__init__(self._render())

    def called_from(self, function: str, line: int, col: int, source_line: str) -> "SpecError":
        """This error, raised while expanding `function` at a call on `line`."""
        return SpecError(self.msg, file=self.file, line=self.line, col=self.col,
                         source_line=self.source_line,
                         calls=(*self.calls, (function, line, col, source_line)))

    def _render(self) -> str:
        text = self._excerpt(f"{self.file}:{self.line}:{self.col}: {self.msg}", self.source_line,
                             self.col)
        for function, line, col, source_line in self.calls:
            text += "\n" + self._excerpt(f"{self.file}:{line}:{col}: in this call of {function}",
                                          source_line, col)
        return text

    @staticmethod
    def _excerpt(head: str, source_line: str | None, col: int) -> str:
        if source_line is None:
            return head
        text = source_line.rstrip("\r\n")
        # Show unprintable characters as '?' (one column each, so the caret still lines up).
        text = "".join(ch if ch.isprintable() or ch == "\t" else "?" for ch in text)
        if len(text) > _WIDTH:  # a window around the column, not a 100,000-character line
            start = max(0, min(col - 1 - _WIDTH // 2, len(text) - _WIDTH))
            window = text[start:start + _WIDTH]
            prefix = "..." if start > 0 else ""
            suffix = "..." if start + _WIDTH < len(text) else ""
            col = col - start + len(prefix)
            text = prefix + window + suffix
        # Keep tabs in the caret's indentation so the caret lines up under tab-indented text.
        pad = "".join("\t" if ch == "\t" else " " for ch in text[: col - 1])
        return f"{head}\n    {text}\n    {pad}^"


class ArgumentKeyError(KeyError):
    """A KeyError whose message prints as written (KeyError would show it quoted, as a repr)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class SpecWarning(UserWarning):
    """A spec that compiles but probably does not say what its author meant (an intermediate
    nothing reads, a parameter named like a value). Printed like a SpecError; silenced with the
    usual filters: warnings.simplefilter("ignore", rnncc.SpecWarning)."""

    def __init__(self, msg: str, *, file: str = "<spec>", line: int = 1, col: int = 1,
                 source_line: str | None = None):
        self.msg, self.file, self.line, self.col = msg, file, line, col
        # the same rendering as a SpecError: FILE:LINE:COL: warning: ..., the line, a caret
        super().__init__(SpecError("warning: " + msg, file=file, line=line, col=col,
                                   source_line=source_line).args[0])
