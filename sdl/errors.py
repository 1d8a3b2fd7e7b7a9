"""The SDL error type: every problem found in one file, each with its YAML path, line and column."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong (or suspicious) in an SDL file.

    ``path`` is the dotted YAML path (``profiles.compute.web.resources.memory.size``); ``line`` and
    ``column`` are 1-based positions of the offending node (0 when the problem has no single place,
    such as an empty file).
    """

    path: str
    line: int
    column: int
    message: str
    severity: Severity = "error"

    def render(self, source: str = "<sdl>") -> str:
        """``FILE:LINE:COL: message`` — the form editors and CI annotators understand."""
        where = f"{self.path}: " if self.path else ""
        tag = "warning: " if self.severity == "warning" else ""
        return f"{source}:{self.line}:{self.column}: {tag}{where}{self.message}"


class ProblemList(list[Problem]):
    """Problems in the order found, each once. The duplicate check is a set lookup, so collecting
    stays linear however many problems a hostile file has."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[Problem] = set()

    def add(self, problem: Problem) -> bool:
        """Append ``problem`` unless it is already here; True when it was new."""
        if problem in self._seen:
            return False
        self._seen.add(problem)
        self.append(problem)
        return True


class SdlError(Exception):
    """Raised by :func:`sdl.parse` when an SDL is invalid. Carries every problem found.

    It is the only exception ``sdl`` lets escape, whatever the input.
    """

    def __init__(self, problems: list[Problem], source: str = "<sdl>") -> None:
        self.problems: tuple[Problem, ...] = tuple(p for p in problems if p.severity == "error")
        self.warnings: tuple[Problem, ...] = tuple(p for p in problems if p.severity == "warning")
        self.source = source
        super().__init__("\n".join(p.render(source) for p in self.problems) or "invalid SDL")
