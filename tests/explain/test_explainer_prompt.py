"""The explainer prompt: exact text, normalization, the zeros-filtered repeat, shortening."""

import pytest

from autointerp.activations.data_model import ActivationRecord
from autointerp.errors import InputError
from autointerp.explain.explainer_prompt import (
    EXPLAINER_PROMPT_VERSION,
    build_explanation_request,
    build_token_list_explanation_request,
    shown_tokens,
    tokens_by_mean,
)
from autointerp.explain.few_shot import FEW_SHOT_SETS, FewShotNeuron, few_shot_hash
from autointerp.explain.prompt_format import (
    ResponseParseError,
    explainer_block,
    normalize_activations,
    parse_explanation,
)

TINY_FEW_SHOT = [
    FewShotNeuron(
        records=(ActivationRecord(tokens=["Hello", " world"], activations=[0.0, 2.0]),),
        explanation="the word world",
    )
]
TARGET = ActivationRecord(
    tokens=["x", " )", "\n", " y", " z", " w"], activations=[-0.5, 5.0, 0.0, 0.1, 0.0, 0.0]
)
SECOND = ActivationRecord(tokens=["(", "a", " b", " c", " ]"], activations=[0, 0, 0, 0, 2.5])

EXPECTED_PROMPT = (
    "This is a study of the neurons of a neural network language model. A neuron responds to "
    "some particular feature of the text it reads. Each excerpt below is written one token per "
    "line in the format token<tab>activation, where the activation is a whole number from 0 to "
    "10: 0 means no response to that token, and larger values mean a stronger response. From "
    "the tokens with nonzero activations, explain in one short phrase what the neuron responds "
    "to. Describe the pattern rather than listing every token."
    "\n"
    "\n"
    "Neuron 1\n"
    "Activations:\n"
    "<start>\n"
    "Hello\t0\n"
    " world\t10\n"
    "<end>\n"
    "\n"
    "Explanation of neuron 1 behavior: the main thing this neuron does is find the word world."
    "\n"
    "\n"
    "Neuron 2\n"
    "Activations:\n"
    "<start>\n"
    "x\t0\n"
    " )\t10\n"
    "\\n\t0\n"
    " y\t0\n"
    " z\t0\n"
    " w\t0\n"
    "<end>\n"
    "<start>\n"  # records are joined by <end> and <start> lines, with no blank line between
    "(\t0\n"
    "a\t0\n"
    " b\t0\n"
    " c\t0\n"
    " ]\t5\n"
    "<end>\n"
    "\n"
    "Same activations, but with all zeros filtered out:\n"
    "<start>\n"
    " )\t10\n"
    "<end>\n"
    "<start>\n"
    " ]\t5\n"
    "<end>\n"
    "\n"
    "Explanation of neuron 2 behavior: the main thing this neuron does is find"
)


def test_prompt_snapshot():
    request = build_explanation_request([TARGET, SECOND], few_shot=TINY_FEW_SHOT)
    assert request.prompt == EXPECTED_PROMPT
    assert [m["role"] for m in request.messages] == ["system", "user", "assistant", "user"]
    assert request.messages[2]["content"] == " the word world."
    assert request.messages[3]["content"].startswith("\n\nNeuron 2\nActivations:\n<start>\nx\t0")
    assert request.prompt_version == EXPLAINER_PROMPT_VERSION
    assert request.few_shot_hash == few_shot_hash(TINY_FEW_SHOT)
    assert (request.dropped_few_shot_records, request.dropped_target_records) == (0, 0)


def test_normalization():
    records = [
        ActivationRecord(["a", "b"], [1.0, 2.0]),
        ActivationRecord(["c", "d", "e"], [4.0, -1.0, 3.99]),
    ]
    # max over all records shown: floor(10 · relu(x) / 4), never above 10
    assert normalize_activations(records) == [[2, 5], [10, 0, 9]]
    assert normalize_activations([ActivationRecord(["a", "b"], [-1.0, 0.0])]) == [[0, 0]]
    assert normalize_activations([ActivationRecord([], [])]) == [[]]


def test_zeros_filtered_repeat_only_below_twenty_percent_nonzero():
    def block(activations: list[float]) -> str:
        tokens = [f"t{i}" for i in range(len(activations))]
        return explainer_block(1, [ActivationRecord(tokens, activations)])

    assert "all zeros filtered out" not in block([5, 0, 0, 0, 0])  # exactly 20%
    assert "all zeros filtered out" in block([5, 0, 0, 0, 0, 0])  # 1 in 6
    # judged on the displayed values: 2 of 9 raw activations are positive, but 0.4 of a max
    # of 5 is displayed as 0
    assert "all zeros filtered out" in block([5, 0.4, 0, 0, 0, 0, 0, 0, 0])


def test_static_part_is_identical_across_neurons():
    a = build_explanation_request([TARGET])
    b = build_explanation_request([ActivationRecord(["sea", " ship"], [1.0, 9.0])])
    assert a.messages[:-1] == b.messages[:-1]
    assert a.messages[-1] != b.messages[-1]
    assert a.prompt_hash != b.prompt_hash
    assert len(a.messages) == 2 + 2 * len(FEW_SHOT_SETS["default"])
    assert a.messages[-1]["content"].startswith("\n\nNeuron 4\n")


def test_shortening_drops_few_shot_records_then_target_records():
    targets = [TARGET] * 3
    full = build_explanation_request(targets, count_tokens=len)
    records_in_few_shot = sum(len(n.records) for n in FEW_SHOT_SETS["default"])

    # a budget a little below the full prompt: one few-shot record goes
    shorter = build_explanation_request(
        targets, max_prompt_tokens=full.prompt_tokens - 1, count_tokens=len
    )
    assert shorter.dropped_few_shot_records == 1
    assert shorter.dropped_target_records == 0
    assert shorter.prompt_tokens <= full.prompt_tokens - 1
    assert shorter.messages[0] == full.messages[0]

    # only room for the target alone: every few-shot record goes, then target records
    alone = build_explanation_request(targets, few_shot=[], count_tokens=len)
    budget = alone.prompt_tokens - 1
    shortest = build_explanation_request(targets, max_prompt_tokens=budget, count_tokens=len)
    assert shortest.dropped_few_shot_records == records_in_few_shot
    assert shortest.dropped_target_records >= 1
    assert len(shortest.messages) == 2  # system and target
    assert shortest.messages[-1]["content"].startswith("\n\nNeuron 1\n")
    assert shortest.prompt_tokens <= budget

    with pytest.raises(InputError):
        build_explanation_request(targets, max_prompt_tokens=10, count_tokens=len)


def test_few_shot_hash_follows_content():
    changed = [FewShotNeuron(TINY_FEW_SHOT[0].records, "something else")]
    assert few_shot_hash("default") == few_shot_hash(FEW_SHOT_SETS["default"])
    assert few_shot_hash(TINY_FEW_SHOT) != few_shot_hash(changed)
    assert len(few_shot_hash("default")) == 64
    with pytest.raises(InputError):
        few_shot_hash("no-such-set")


def test_token_list_variant_shows_fifty_of_the_top_hundred():
    ranked = [f" w{i}" for i in range(150)]  # by mean activation over the corpus, highest first
    shown = shown_tokens(ranked)
    assert len(shown) == 50
    assert set(shown) <= set(ranked[:100])
    assert shown == sorted(shown, key=ranked.index)  # rank order
    assert shown == shown_tokens(ranked)  # deterministic for a seed

    request = build_token_list_explanation_request(ranked)
    assert request.messages[-1]["content"].startswith('\n\nNeuron 4\nTop tokens: " w')
    assert request.messages[-1]["content"].endswith(
        "\nExplanation of neuron 4 behavior: the main thing this neuron does is find"
    )
    with pytest.raises(InputError, match="top_mean_tokens"):
        build_token_list_explanation_request([])


def test_few_shot_tokens_rank_by_mean_not_total():
    records = [ActivationRecord(["a", "a", "a", "b"], [1.0, 1.0, 1.0, 2.0])]
    assert tokens_by_mean(records) == ["b", "a"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" closing parentheses.", "closing parentheses"),
        ("  words about the sea\nNeuron 5", "words about the sea"),
        ("the surname after Mr. Smith. Also titles.", "the surname after Mr. Smith"),
        ("years such as 1990 and 2001. It is strongest on", "years such as 1990 and 2001"),
        ("the token 'e.g.' itself", "the token 'e.g.' itself"),
    ],
)
def test_parse_explanation(text, expected):
    assert parse_explanation(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "\n\n", "."])
def test_parse_explanation_refuses_empty(text):
    with pytest.raises(ResponseParseError):
        parse_explanation(text)
