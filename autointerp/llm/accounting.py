"""Token and cost accounting over call results, and the rows of the calls' audit tables."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import polars as pl

from autointerp.llm.requests import CallResult
from autointerp.storage.hashing import canonical_json
from autointerp.storage.schemas import CALLS_SCHEMA


def calls_frame(results: Iterable[CallResult]) -> pl.DataFrame:
    """One row per call result, so an audit shows the prompt as sent and what came back."""
    rows = [
        {
            "call_id": r.call_id,
            "request_hash": r.request_hash,
            "kind": r.kind,
            "model": r.model,
            "endpoint": r.endpoint,
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens,
            "cost_usd": r.cost_usd,
            "latency_s": r.latency_s,
            "status": r.status,
            "attempts": r.attempts,
            "error": r.error,
            "cached": r.cached,
            "request_json": canonical_json(r.request),
            "response_texts": r.texts,
        }
        for r in results
    ]
    return pl.DataFrame(rows, schema=CALLS_SCHEMA)


@dataclass(frozen=True)
class Usage:
    """Totals over call results: what a neuron, a stage or a run consumed."""

    calls: int
    http_calls: int  # calls that reached the endpoint (not cache hits)
    cached: int
    errors: int
    prompt_tokens: int  # of calls that reached the endpoint
    completion_tokens: int
    cost_usd: float | None  # None when any call's cost is unknown

    @classmethod
    def of(cls, results: Iterable[CallResult]) -> Usage:
        results = list(results)
        sent = [r for r in results if r.status == "ok"]
        costs = [r.cost_usd for r in results]
        return cls(
            calls=len(results),
            http_calls=sum(r.attempts > 0 for r in results),
            cached=sum(r.cached for r in results),
            errors=sum(not r.ok for r in results),
            prompt_tokens=sum(r.prompt_tokens or 0 for r in sent),
            completion_tokens=sum(r.completion_tokens or 0 for r in sent),
            cost_usd=None if any(c is None for c in costs) else sum(costs),
        )
