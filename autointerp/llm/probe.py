"""One cheap call at the start of a stage that checks the server can do what the stage needs, so
a server without prompt logprobs, chat logprobs or room for the prompt is refused at once, in one
line naming the server setting to change, rather than after every call has failed or retried.

The probe is the stage's longest request, sent through the stage's cache: when the server can
serve it, the stage reads the reply from the cache and the probe costs nothing extra.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Literal

from autointerp.errors import InputError
from autointerp.llm.client import LLMClient
from autointerp.llm.requests import CallResult, LLMRequest
from autointerp.llm.responses import CompletionLogprobs

log = logging.getLogger(__name__)

Need = Literal["prompt_logprobs", "chat_logprobs"]
# A failed probe is tried once more before a verdict: one transient 500 is not a refusal.
PROBE_ATTEMPTS = 2

_SERVER_ERROR_ON_LOGPROBS = re.compile(r"^HTTP 5\d\d: .*logprob", re.I).search
_CONTEXT = re.compile(r"context (window|length)|maximum context|n_ctx|max_model_len", re.I)
_LOGITS_ALL = "start llama-cpp-python with --logits_all True"
_FIXES = {
    "prompt_logprobs": f"{_LOGITS_ALL} (vLLM returns them as is), or use a chat_logprobs simulator",
    "chat_logprobs": f"{_LOGITS_ALL} (vLLM returns them as is), or use a plain_text simulator",
}


class ServerUnsuitable(InputError):
    """The server cannot do what a stage needs; the message names the setting to change."""


def _size(request: LLMRequest) -> int:
    return len(json.dumps(request.messages if request.kind == "chat" else request.prompt))


def probe(client: LLMClient, requests: Sequence[LLMRequest], *, needs: Need | None = None) -> None:
    """Send the longest of `requests` (at most PROBE_ATTEMPTS attempts) and raise
    ServerUnsuitable when the reply shows the server cannot serve the stage. A failure that says
    nothing about the server (a timeout, a refused connection, a 429) only warns: the stage's
    own retry policy deals with it."""
    if not requests:
        return
    endpoint = client.endpoint
    once = client.with_attempts(PROBE_ATTEMPTS)
    try:
        result = once.run_all([max(requests, key=_size)])[0]
    finally:
        once.close()
    problem = verdict(result, needs)
    if problem is not None:
        raise ServerUnsuitable(f"{endpoint.shown} cannot serve this stage: {problem}")
    if not result.ok:
        log.warning("the first call to %s failed (%s); going on", endpoint.shown, result.error)


def verdict(result: CallResult, needs: Need | None) -> str | None:
    """What the probe's result shows the server cannot do, with the fix; None when nothing."""
    error = result.error or ""
    if not result.ok:
        if _CONTEXT.search(error):
            return (
                f"the stage's longest prompt does not fit the server's context ({error}); raise "
                "the server's context size (llama-cpp-python --n_ctx, vLLM --max-model-len) or "
                "lower the profile's max_prompt_tokens"
            )
        # llama-cpp-python without --logits_all answers a request for logprobs with HTTP 500
        # naming it; another 5xx may be passing, and is left to the retry policy.
        if needs is not None and ("logits_all" in error or _SERVER_ERROR_ON_LOGPROBS(error)):
            return f"it cannot return logprobs ({error}); {_FIXES[needs]}"
        if needs is not None and error.startswith("HTTP 400") and "logprobs" in error:
            return (
                f"it refuses the request for logprobs ({error}); allow 15 alternatives "
                "(vLLM --max-logprobs 20)"
            )
        return None
    logprobs = result.logprobs[0] if result.logprobs else None
    if needs == "prompt_logprobs" and not (
        isinstance(logprobs, CompletionLogprobs) and sum(map(bool, logprobs.top_logprobs)) > 1
    ):
        return f"its completions carry no prompt logprobs with echo=True; {_FIXES[needs]}"
    if needs == "chat_logprobs" and not (
        isinstance(logprobs, list) and any(t.top_logprobs for t in logprobs)
    ):
        return f"its chat completions carry no logprobs; {_FIXES[needs]}"
    return None
