"""The offline baselines on synthetic neurons whose behaviour is known."""

import numpy as np
import pytest

from autointerp.activations.data_model import ActivationRecord
from autointerp.explain.baseline import explain_by_token_statistics
from autointerp.score.metrics import score_all
from autointerp.simulate.baseline import DEFAULT_WEIGHTS, lexical_model, simulate_lexical
from autointerp.token_text import normalize_token, stem

WORDS = (  # noqa: SIM905
    "the a of and to in is was he she it that with for on as his her by at from this they we "
    "you old man house day night water light hand eye time way year people world life long "
    "little great good new first last small large king queen lord city road"
).split()


def excerpts(rng: np.random.Generator, special: list[str], n: int = 300) -> list[list[str]]:
    """Excerpts of 64 GPT-2-style tokens; about 3% of them are one of `special`."""
    return [
        [
            special[rng.integers(len(special))]
            if rng.random() < 0.03
            else " " + WORDS[rng.integers(len(WORDS))]
            for _ in range(64)
        ]
        for _ in range(n)
    ]


def held_out_correlation(rng, texts, neuron) -> tuple[str, float]:
    """Explain from the train top records against random ones (the reference's splits), then
    simulate and score the test split (5 top + 5 random)."""
    records = [ActivationRecord(t, neuron(t)) for t in texts]
    ranked = sorted(records, key=lambda r: -max(r.activations))[:20]
    random = [records[i] for i in rng.choice(len(records), 15, replace=False)]
    explanation = explain_by_token_statistics(ranked[0::4], random)
    test = ranked[3::4] + random[2::3]
    predicted = [simulate_lexical(explanation, r.tokens) for r in test]
    return explanation, score_all([r.activations for r in test], predicted).ev_correlation


def test_word_neuron_is_explained_and_simulated():
    rng = np.random.default_rng(0)

    def neuron(tokens):
        return [4 + rng.random() if t == " ship" else 0.1 * rng.standard_normal() for t in tokens]

    explanation, correlation = held_out_correlation(rng, excerpts(rng, [" ship", " Mr"]), neuron)
    assert '"ship"' in explanation
    assert correlation > 0.8


def test_context_neuron_is_explained_by_its_preceding_token():
    rng = np.random.default_rng(1)

    def neuron(tokens):
        return [
            3 + rng.random() if i and tokens[i - 1] == " Mr" else 0.1 * rng.standard_normal()
            for i in range(len(tokens))
        ]

    explanation, correlation = held_out_correlation(rng, excerpts(rng, [" ship", " Mr"]), neuron)
    assert explanation.startswith('the token right after "mr"')
    assert correlation > 0.8


def test_explainer_is_deterministic_and_names_context():
    top = [
        ActivationRecord([" the", " sea", " and", " the", " ship"], [0, 5, 0, 0, 4]),
        ActivationRecord([" the", " sails", " of", " the", " sea"], [0, 3, 0, 0, 5]),
    ]
    random = [ActivationRecord([" a", " man", " and", " the", " king", " of"], [0] * 6)]
    explanation = explain_by_token_statistics(top, random)
    assert explanation == 'the tokens "sea", "ship" (often after "the")'
    assert explain_by_token_statistics(top, random) == explanation


def test_explainer_on_a_neuron_that_never_fires():
    dead = [ActivationRecord([" a", " b"], [-1.0, 0.0])]
    assert explain_by_token_statistics(dead, dead).startswith("nothing")


def test_normalization_and_stems():
    assert (
        normalize_token("ĠShip") == normalize_token("▁ship") == normalize_token(" Ship ") == "ship"
    )
    assert normalize_token(")") == ")"
    assert stem("ships") == stem("ship") == "ship"
    assert stem("sailing") == stem("sails") == "sail"
    assert stem("class") == "class" and stem("bus") == "bus" and stem("cities") == "city"


def test_lexical_model_reads_quotes_words_and_contexts():
    model = lexical_model('ships, and words like “harbor” or \'boat\' following "the" or "a"')
    assert model.exact["harbor"] == model.exact["boat"] == DEFAULT_WEIGHTS.quoted
    assert model.stems["ship"] < DEFAULT_WEIGHTS.quoted  # unquoted words weigh less
    assert model.contexts == {"the", "a"}
    assert "like" not in model.exact and "words" not in model.exact


def test_lexical_simulator_predictions():
    explanation = 'the tokens "sea", "ship" (often after "the")'
    tokens = [" A", " ships", " sea", " and", " the", " SEA", "\n", " boat", " the", " boat"]
    # a stem match weighs 7; "after the" adds 3, capped at 10
    assert simulate_lexical(explanation, tokens) == pytest.approx([0, 7, 10, 0, 0, 10, 0, 0, 0, 3])
    after = simulate_lexical('the token right after "mr"', [" Mr", " Hall", " Mr", "\n", " Li"])
    assert after == pytest.approx([0, DEFAULT_WEIGHTS.context, 0, 0, DEFAULT_WEIGHTS.context])


def test_lexical_simulator_knows_nothing_of_unnamed_tokens():
    assert simulate_lexical("closing parentheses", [" (", ")", " x"]) == [0.0, 0.0, 0.0]
    assert simulate_lexical('the tokens ")" and "]"', [" (", ")", "]"]) == [0.0, 10.0, 10.0]
