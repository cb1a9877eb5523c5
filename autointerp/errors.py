"""The errors autointerp raises for bad input: each says what is wrong and how to fix it; and the
rule that decides when a stage's row errors fail the stage."""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl


class AutointerpError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""


class ConfigError(AutointerpError):
    """The configuration, a model declaration or AUTOINTERP_HOME is unusable."""


class InputError(AutointerpError):
    """A request (layers, corpus, excerpt length, a table) cannot be served as asked."""


class TooManyErrors(AutointerpError):
    """More of a stage's rows failed than the configuration's max_error_fraction allows."""


_STEP = re.compile(r"^[a-z]+$")  # a step's name before its error: "revision: HTTP 500: ..."
_NUMBER = re.compile(r"(?<!HTTP )\b\d+(?:\.\d+)?\b")


def error_kind(message: str) -> str:
    """What kind of failure an error message reports, for counting errors alike: its text up
    to the first colon or parenthesis (past a leading step name), numbers as N but HTTP
    statuses kept: "HTTP 500", "timed out after N s", "revision: HTTP 503"."""
    head, *rest = re.split(r"\s*[:(]\s*", message.strip(), maxsplit=2)
    if _STEP.match(head) and rest and rest[0]:
        head = f"{head}: {rest[0]}"
    return _NUMBER.sub("N", head)[:80] or "error"


MAX_KINDS_SHOWN = 3
_EXAMPLE_CHARS = 120


def error_counts(errors: list[str]) -> str:
    """Errors counted by kind, the most common first, with one example of each (cut short):
    "HTTP 500 x 30, e.g. 'HTTP 500: logprobs need logits_all (gave up...)'; ..."."""
    kinds: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for message in errors:
        kind = error_kind(message)
        kinds[kind] += 1
        examples.setdefault(kind, message)
    shown = [
        f"{kind} x {count}, e.g. {examples[kind][:_EXAMPLE_CHARS]!r}"
        for kind, count in kinds.most_common(MAX_KINDS_SHOWN)
    ]
    if len(kinds) > MAX_KINDS_SHOWN:
        shown.append(f"and {len(kinds) - MAX_KINDS_SHOWN} more kinds")
    return "; ".join(shown)


def check_error_fraction(
    frame: pl.DataFrame, max_fraction: float, *, stage: str, audit: str | None = None
) -> None:
    """Raise TooManyErrors when more than `max_fraction` of the frame's rows have an `error`,
    in one short line: the counts, the errors by kind with one example each, and the audit
    table (`audit`) where every call of the stage is on record; otherwise return quietly."""
    total = frame.height
    errors = frame["error"].drop_nulls().to_list()
    if not total or len(errors) <= max_fraction * total:
        return
    where = f" Every call made is in {audit}." if audit else ""
    raise TooManyErrors(
        f"{stage}: {len(errors)} of {total} rows failed ({len(errors) / total:.0%}), more than "
        f"max_error_fraction = {max_fraction:.0%}: {error_counts(errors)}.{where}"
    )
