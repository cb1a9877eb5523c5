"""Saving the study's models and tokenizer: whole folders, replaced at once."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from filelock import FileLock

from autointerp.activations.subject_model import write_folder


class Saveable(Protocol):
    def save_pretrained(self, folder: str | Path) -> object: ...


def save_pretrained(folder: Path, *parts: Saveable) -> Path:
    """Write each part's `save_pretrained` into `folder`, replacing it whole: a reader (the
    subject-model loader, in another process) sees the previous folder or the new one, never a
    mix."""
    folder.parent.mkdir(parents=True, exist_ok=True)

    def fill(partial: Path) -> None:
        for part in parts:
            part.save_pretrained(partial)

    with FileLock(folder.parent / f".{folder.name}.lock"):
        write_folder(folder, fill)
    return folder
