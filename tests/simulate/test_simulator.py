"""Simulator parsers on hand-built logprob structures: EV arithmetic, alignment, fallbacks."""

import json
import math
import re
from pathlib import Path

import pytest

from autointerp.activations.data_model import ActivationRecord
from autointerp.errors import InputError
from autointerp.explain.few_shot import FewShotNeuron
from autointerp.explain.prompt_format import ResponseParseError
from autointerp.llm.responses import parse_response
from autointerp.simulate.parsers import (
    expected_value,
    parse_all_at_once,
    parse_chat_logprobs,
    parse_plain_text,
)
from autointerp.simulate.simulator_prompt import (
    ALL_AT_ONCE,
    CHAT_LOGPROBS,
    PLAIN_TEXT,
    build_all_at_once_request,
    build_chat_request,
)

FEW_SHOT = [
    FewShotNeuron(
        records=(ActivationRecord(tokens=["a", " boat"], activations=[0.0, 1.5]),),
        explanation="boats",
    )
]
REVEALING = [  # two records, the first with its first token hidden as in the reference
    FewShotNeuron(
        records=(
            ActivationRecord(tokens=["a", " boat"], activations=[0.0, 1.5]),
            ActivationRecord(tokens=[" the", " sea"], activations=[0.0, 3.0]),
        ),
        explanation="boats",
        first_revealed=(1, 0),
    )
]
TOKENS = ["The", " ship", "\n"]
ln = math.log


def test_expected_value_renormalizes_over_numbers():
    alternatives = [("0", ln(0.5)), ("10", ln(0.25)), (" 5", ln(0.25)), ("the", ln(0.9))]
    assert expected_value(alternatives) == pytest.approx(0 * 0.5 + 10 * 0.25 + 5 * 0.25)
    # the same number written two ways adds up; "11" and "-1" are not on the scale
    alternatives = [("3", ln(0.1)), ("\t3", ln(0.1)), ("7", ln(0.2)), ("11", ln(0.5))]
    assert expected_value(alternatives) == pytest.approx((3 * 0.2 + 7 * 0.2) / 0.4)
    assert expected_value([("unknown", -0.1), ("-1", -1.0)]) is None
    assert expected_value([]) is None


# --- all-at-once (echo) ---------------------------------------------------------------------


def echo(
    prompt: str,
    answers: dict[int, dict[str, float]],
    *,
    fold: int | None = None,
    newline_fold: int | None = None,
) -> dict:
    """A completions `logprobs` object echoing `prompt`, split at tabs and newlines like a
    tokenizer would; `answers` gives the top logprobs at the n-th `unknown`. With `fold`, the
    n-th `unknown` is merged with the tab before it; with `newline_fold`, the n-th target
    token is merged with the newline before it: both as tokenizers that fold them would."""
    start = prompt.rindex("<start>\n") + len("<start>")
    pieces = re.findall(r"\n|\t|[^\n\t]+", prompt)
    tokens, top, seen, offset, line = [], [], 0, 0, -1
    for piece in pieces:
        if piece == "unknown":
            if seen == fold:
                tokens[-1] += piece
            else:
                tokens.append(piece)
                top.append(answers.get(seen, {"unknown": -0.01}))
            seen += 1
        elif offset > start and tokens and tokens[-1] == "\n" and piece not in ("\t", "<end>"):
            line += 1
            if line == newline_fold:
                tokens[-1] += piece
            else:
                tokens.append(piece)
                top.append({piece: -0.5})
        else:
            tokens.append(piece)
            top.append({piece: -0.5})
        offset += len(piece)
    top[0] = None  # the first prompt token has no logprobs
    offsets = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
    return {
        "tokens": tokens,
        "token_logprobs": [None] + [-0.5] * (len(tokens) - 1),
        "top_logprobs": top,
        "text_offset": offsets,
    }


ANSWERS = {
    0: {"0": ln(0.8), "1": ln(0.2), "unknown": ln(0.5)},
    1: {" 8": ln(0.3), "9": ln(0.1), "the": ln(0.6)},
    2: {"unknown": -0.1, "a": -3.0},
}


def test_all_at_once_request_is_the_reference_layout():
    request = build_all_at_once_request("ships", TOKENS, few_shot=REVEALING)
    assert request.method == ALL_AT_ONCE
    # One generated token, ignored: llama-cpp-python reads max_tokens 0 as unlimited.
    assert request.params["max_tokens"] == 1
    assert request.params["echo"] is True
    assert request.params["logprobs"] == 15
    # As the reference writes it: no period after the explanation, "Activations: " then the
    # records joined by <end> and <start> lines, few-shot tokens hidden before first_revealed,
    # and the blank lines between neurons the reference's messages leave.
    assert request.prompt.endswith(
        "\n\nNeuron 1\nExplanation of neuron 1 behavior: the main thing this neuron does is find "
        "boats\nActivations: \n<start>\na\tunknown\n boat\t5\n<end>\n<start>\n the\t0\n sea\t10\n"
        "<end>\n\n"
        "\n\nNeuron 2\nExplanation of neuron 2 behavior: the main thing this neuron does is find "
        "ships\nActivations: \n<start>\nThe\tunknown\n ship\tunknown\n\\n\tunknown\n<end>\n"
    )
    assert [request.prompt[o : o + 8] for o in request.answer_offsets] == ["unknown\n"] * 3
    starts = [request.prompt[o : o + 5] for o in request.token_offsets]
    assert starts == ["The\tu", " ship", "\\n\tun"]


def test_all_at_once_expected_values():
    request = build_all_at_once_request("ships", TOKENS, few_shot=FEW_SHOT)
    result = parse_all_at_once(request, echo(request.prompt, ANSWERS))
    first, second, third = result.expected_activations
    assert (first, second) == pytest.approx([0.2, (8 * 0.3 + 9 * 0.1) / 0.4])
    assert third is None and result.missing == [2]  # no numeric alternative: no value
    assert result.sampled == [] and result.folded == []


def test_all_at_once_without_text_offsets_and_with_a_bos_prefix():
    request = build_all_at_once_request("ships", TOKENS, few_shot=FEW_SHOT)
    logprobs = echo(request.prompt, ANSWERS)
    positions = [
        {"token": t, "logprob": None, "top_logprobs": alts}
        for t, alts in zip(
            ["<s>", *logprobs["tokens"]], [None, *logprobs["top_logprobs"]], strict=True
        )
    ]
    result = parse_all_at_once(request, positions)
    assert result.expected_activations[:2] == pytest.approx([0.2, 8.25])


RECORDED = Path(__file__).parent / "recorded"


@pytest.mark.parametrize(
    ("recording", "shifted"),
    [
        # vLLM: the first prompt token has no logprobs; each position's alternatives are the
        # distribution over its own token, which they include.
        ("vllm_echo.json", False),
        # llama-cpp-python serving a model whose tokenizer adds no BOS (SmolLM2): each position
        # carries the distribution over the NEXT token (with its own token added to it).
        ("llama_cpp_echo_no_bos.json", True),
    ],
)
def test_all_at_once_recorded_server_replies_align_by_text_offset(recording, shifted):
    request = build_all_at_once_request("ships", ["The", " ship", " sails"], few_shot=FEW_SHOT)
    reply = parse_response("completion", (RECORDED / recording).read_text())
    assert reply.logprobs[0].tokens[-1] == "\n"  # the one generated token, after the prompt
    result = parse_all_at_once(request, reply.logprobs[0])
    assert result.shifted is shifted
    assert result.missing == [] and result.folded == []
    assert result.expected_activations == pytest.approx([0.4, 8.1, 0.3], abs=1e-3)


def test_all_at_once_shift_is_read_per_reply_not_assumed():
    """Read at the wrong position, a shifted echo answers nothing: the parser must not."""
    request = build_all_at_once_request("ships", ["The", " ship", " sails"], few_shot=FEW_SHOT)
    body = json.loads((RECORDED / "llama_cpp_echo_no_bos.json").read_text())
    logprobs = body["choices"][0]["logprobs"]
    at = [logprobs["text_offset"].index(o) for o in request.answer_offsets]
    # The same reply with the values moved onto the `unknown` tokens reads unshifted.
    for i in at:
        logprobs["top_logprobs"][i], logprobs["top_logprobs"][i - 1] = (
            logprobs["top_logprobs"][i - 1],
            {"\t": -0.01},
        )
    result = parse_all_at_once(request, logprobs)
    assert not result.shifted
    assert result.expected_activations == pytest.approx([0.4, 8.1, 0.3], abs=1e-3)


def test_all_at_once_tab_folded_into_unknown_gives_no_value():
    request = build_all_at_once_request("ships", TOKENS, few_shot=FEW_SHOT)
    result = parse_all_at_once(request, echo(request.prompt, ANSWERS, fold=1))
    assert result.expected_activations[0] == pytest.approx(0.2)
    assert result.expected_activations[1:] == [None, None]
    assert result.missing == [1, 2]


def test_all_at_once_newline_folded_into_the_token_is_zero_as_in_the_reference():
    request = build_all_at_once_request("ships", TOKENS, few_shot=FEW_SHOT)
    result = parse_all_at_once(request, echo(request.prompt, ANSWERS, newline_fold=1))
    assert result.expected_activations[:2] == pytest.approx([0.2, 0.0])
    assert result.folded == [1] and result.missing == [2]


def test_all_at_once_refuses_an_echo_of_another_prompt():
    request = build_all_at_once_request("ships", TOKENS, few_shot=FEW_SHOT)
    logprobs = echo(request.prompt, ANSWERS)
    positions = [
        {"token": t, "logprob": None, "top_logprobs": a}
        for t, a in zip(logprobs["tokens"][1:], logprobs["top_logprobs"][1:], strict=True)
    ]
    with pytest.raises(ResponseParseError):
        parse_all_at_once(request, positions)
    with pytest.raises(InputError):
        parse_all_at_once(build_chat_request("ships", TOKENS), logprobs)


# --- chat with logprobs ---------------------------------------------------------------------


def generated(*pieces: tuple[str, list[tuple[str, float]] | None]) -> list[dict]:
    return [
        {"token": token, "logprob": None if top is None else -0.1, "top_logprobs": top or []}
        for token, top in pieces
    ]


def test_chat_request():
    request = build_chat_request("ships", TOKENS, few_shot=FEW_SHOT)
    assert request.method == CHAT_LOGPROBS
    assert request.params["logprobs"] is True and request.params["top_logprobs"] == 15
    roles = [m["role"] for m in request.messages]
    assert roles == ["system", "user", "assistant", "user"]
    assert request.messages[2]["content"] == "a\t0\n boat\t10"
    assert request.messages[-1]["content"] == (
        "Neuron 2\nExplanation of neuron 2 behavior: the main thing this neuron does is find "
        "ships\nTokens:\nThe\n ship\n\\n"
    )
    plain = build_chat_request("ships", TOKENS, few_shot=FEW_SHOT, logprobs=False)
    assert plain.method == PLAIN_TEXT and "logprobs" not in plain.params
    assert plain.messages == request.messages


def test_chat_expected_values_from_number_positions():
    content = generated(
        ("The", None),
        ("\t", None),
        ("3", [("3", ln(0.5)), ("4", ln(0.5))]),
        ("\n", None),
        (" ship", None),
        ("\t10", [("\t10", ln(0.6)), ("\t9", ln(0.2)), ("\tx", ln(0.2))]),
        ("\n", None),
        ("\\n", None),
        ("\t", None),
        ("0", [("0", ln(0.9))]),
    )
    # OpenAI's chat format: top_logprobs as objects
    content[2]["top_logprobs"] = [
        {"token": t, "logprob": lp} for t, lp in content[2]["top_logprobs"]
    ]
    result = parse_chat_logprobs(build_chat_request("ships", TOKENS), content)
    assert result.expected_activations == pytest.approx([3.5, (10 * 0.6 + 9 * 0.2) / 0.8, 0.0])
    assert result.missing == [] and result.sampled == []


def test_chat_falls_back_to_the_written_number():
    content = generated(
        ("The", None),
        ("\t", None),
        ("1", [("1", ln(0.7)), ("2", ln(0.3))]),  # "10" written as two digit tokens
        ("0", [("0", ln(0.9))]),
        ("\n ship\t", None),
        ("7", None),  # no logprobs at all at this position
        ("\n\\n\t2", [("\n\\n\t2", -0.1)]),  # a token holding more than the number
    )
    result = parse_chat_logprobs(build_chat_request("ships", TOKENS), content)
    assert result.expected_activations == pytest.approx([10.0, 7.0, 2.0])
    assert result.sampled == [0, 1, 2]


def test_chat_missing_line_is_zero_and_flagged():
    tokens = ["The", " ship", " sails", " home"]
    content = generated(
        ("The\t", None),
        ("1", [("1", 0.0)]),
        ("\nsails\t", None),
        ("8", [("8", 0.0)]),
        ("\nhome\t", None),
        ("2", [("2", 0.0)]),
    )
    result = parse_chat_logprobs(build_chat_request("ships", tokens), content)
    assert result.expected_activations == [1.0, None, 8.0, 2.0]
    assert result.missing == [1]


# --- plain text -----------------------------------------------------------------------------


def test_plain_text_lines():
    result = parse_plain_text(TOKENS, "The\t2\n ship\t9.5\n\\n\t15\n")
    assert result.expected_activations == pytest.approx([2.0, 9.5, 10.0])  # clipped to 10
    assert result.sampled == [0, 1, 2] and result.missing == []


def test_plain_text_missing_value_and_extra_lines():
    result = parse_plain_text(TOKENS, "Sure:\nThe\t2\nship\tno idea\nextra\t4\nmore\t1")
    assert result.expected_activations == [2.0, None, None]
    assert result.missing == [1, 2]


def test_plain_text_list_of_numbers():
    assert parse_plain_text(TOKENS, "0, 7, 1").expected_activations == [0.0, 7.0, 1.0]


@pytest.mark.parametrize("text", ["I cannot tell.", "1, 2", ""])
def test_plain_text_unparseable(text):
    with pytest.raises(ResponseParseError):
        parse_plain_text(TOKENS, text)
