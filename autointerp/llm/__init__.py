"""The LLM client shared by every stage (explainer, simulator, revision): the endpoint and its
retry policy, requests and results, the response cache, accounting; see `client.py`."""

from autointerp.llm.accounting import Usage, calls_frame
from autointerp.llm.cache import ResponseCache, request_hash
from autointerp.llm.client import LLMClient
from autointerp.llm.endpoint import Endpoint
from autointerp.llm.requests import CallResult, LLMRequest
from autointerp.llm.responses import CompletionLogprobs, TokenLogprob
from autointerp.llm.shared_cache import SharedResponseCache

__all__ = [
    "CallResult",
    "CompletionLogprobs",
    "Endpoint",
    "LLMClient",
    "LLMRequest",
    "ResponseCache",
    "SharedResponseCache",
    "TokenLogprob",
    "Usage",
    "calls_frame",
    "request_hash",
]
