"""The residual stream handed from one capture run to the next, so that a range captured in runs
of a few layers costs the forward work of one pass.

A run over layers s..e that a run over e+1.. follows ends its pass after block e, and writes each
batch's hidden states (the input of block e+1) to a file in the order its batches ran. The next
run reads them back batch by batch instead of running blocks 0..e, which it then does not hold.
The file is read and written sequentially (never mapped: it adds nothing to memory), appears
only when its pass is complete, and is deleted once read through. A run that finds no file runs
the layers below its own, with the same result.

A file is named by everything its hidden states depend on: the model's weights and dtype, the
corpus, the order of the batches (records settings, shard, batch size), the device and the layer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from autointerp.errors import InputError


@dataclass(frozen=True)
class ResidualStream:
    """The hidden states entering one layer, for every excerpt of one pass, in a file."""

    path: Path

    def exists(self) -> bool:
        return self.path.is_file()

    @contextlib.contextmanager
    def writer(self) -> Iterator[Callable[[torch.Tensor], None]]:
        """`write(hidden)` per batch, in the pass's order; the file appears when the block ends
        without error."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f"{self.path.name}.partial-{os.getpid()}")
        try:
            with partial.open("wb") as file:

                def write(hidden: torch.Tensor) -> None:
                    values = hidden.detach().to("cpu").contiguous()
                    file.write(memoryview(values.view(torch.uint8).numpy()))

                yield write
            partial.replace(self.path)
        finally:
            partial.unlink(missing_ok=True)

    @contextlib.contextmanager
    def reader(
        self, dtype: torch.dtype, shape: tuple[int, int]
    ) -> Iterator[Callable[[int], torch.Tensor]]:
        """`read(excerpts)`: the next batch's hidden states [excerpts, *shape]. A file that
        holds more or fewer is removed, with an error that says to run again."""
        row = shape[0] * shape[1] * dtype.itemsize
        with self.path.open("rb") as file:

            def read(excerpts: int) -> torch.Tensor:
                data = bytearray(file.read(excerpts * row))
                if len(data) != excerpts * row:
                    self._refuse()
                return torch.frombuffer(data, dtype=dtype).view(excerpts, *shape)

            yield read
            if file.read(1):
                self._refuse()

    def _refuse(self) -> None:
        self.remove()
        raise InputError(
            f"{self.path} did not hold the hidden states of this pass, and was removed: run "
            "the capture again"
        )

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Handoff:
    """Where the capture runs of one range of layers leave and find the residual stream.

    `identity`: what the hidden states depend on beyond the layer (JSON-able: the model's
    weights and dtype, the corpus, the records settings, the shard, the batch size, the
    device). `range_end`: the deepest layer of the whole range; a run that ends above it hands
    its residual stream on.
    """

    folder: Path
    identity: object
    range_end: int

    def stream(self, layer: int) -> ResidualStream:
        key = json.dumps([self.identity, layer], sort_keys=True, default=str)
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        return ResidualStream(self.folder / f"entering-layer-{layer}-{digest}.bin")

    def streams(self, layers: Sequence[int]) -> tuple[ResidualStream | None, ResidualStream | None]:
        """(the stream a run over `layers` starts from, if a run before it left one; the stream
        it hands on, if a run over deeper layers of the range follows)."""
        first, last = min(layers), max(layers)
        entering = self.stream(first) if first > 0 else None
        leaving = self.stream(last + 1) if last < self.range_end else None
        return (entering if entering and entering.exists() else None), leaving
