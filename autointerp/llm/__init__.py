"""The LLM client shared by every stage (explainer, simulator, revision): see `client.py`."""

from autointerp.llm.accounting import CALLS_SCHEMA, Usage, calls_frame
from autointerp.llm.cache import ResponseCache, request_hash
from autointerp.llm.client import CallResult, Endpoint, LLMClient, LLMRequest
from autointerp.llm.responses import CompletionLogprobs, TokenLogprob

__all__ = [
    "CALLS_SCHEMA",
    "CallResult",
    "CompletionLogprobs",
    "Endpoint",
    "LLMClient",
    "LLMRequest",
    "ResponseCache",
    "TokenLogprob",
    "Usage",
    "calls_frame",
    "request_hash",
]
