"""What part of a settings object enters the hashes that version results.

A code version, or a profile's hash, must change exactly when what an asset computes may change.
So a settings dataclass names two kinds of fields that do not enter its hash unconditionally:
- `OPERATIONAL`: how work is done, not what it computes (concurrency, memory bounds);
- `SINCE_DEFAULT`: knobs added after results were first written with their default behaviour;
  they enter the hash only when set away from their default, so adding a knob leaves the
  results computed before it existed in sync.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar


class Versioned:
    """Mixin for frozen dataclasses whose content versions what they configure."""

    OPERATIONAL: ClassVar[frozenset[str]] = frozenset()
    SINCE_DEFAULT: ClassVar[frozenset[str]] = frozenset()

    def hash_content(self) -> dict[str, Any]:
        """The fields that change results, by name (see the module docstring)."""
        content = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.name in self.OPERATIONAL:
                continue
            if f.name in self.SINCE_DEFAULT and value == f.default:
                continue
            content[f.name] = value
        return content
