"""The explain, simulate and score stages on synthetic excerpts: offline baselines end to end, and
LLM profiles against the scripted OpenAI-compatible server (real `openai` client, real HTTP)."""

from __future__ import annotations

import math
import random
import re
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from autointerp.activations.data_model import NeuronId
from autointerp.activations.excerpts import neuron_excerpts
from autointerp.activations.sampling import select_neurons
from autointerp.activations.splits import split_records
from autointerp.config.profiles import explainer_profile, load_profiles, simulator_profile
from autointerp.errors import TooManyErrors, check_error_fraction
from autointerp.explain.explainer_prompt import EXPLAINER_SYSTEM_MESSAGE
from autointerp.explain.explanations import explain
from autointerp.explain.few_shot import FEW_SHOT_SETS
from autointerp.llm.client import LLMClient
from autointerp.llm.probe import ServerUnsuitable
from autointerp.score.calibration import fit_linear_calibration
from autointerp.score.metrics import score_all
from autointerp.score.scores import score
from autointerp.score.summary import score_summary
from autointerp.simulate.simulations import simulate
from autointerp.storage.schemas import EXPLANATIONS_SCHEMA, SCORES_SCHEMA, SIMULATIONS_SCHEMA
from autointerp.testing.llm_server import (
    COMPLETIONS_PATH,
    Answer,
    LLMServer,
    Tok,
    chat_simulator_handler,
    no_sleep,
    server_error,
    target_tokens,
    tokenize,
)

FILLER = [" the", " old", " man", " walked", " into", " town", " and", " saw", " a", " house"]
FILLER += [" by", " river", " under", " grey", " sky", " with", " his", " friend", ",", "."]
TRIGGERS = (" cat", " dog", " sun", " moon")  # neuron i fires on TRIGGERS[i]; the last is dead
DEAD = len(TRIGGERS)
LENGTH = 16
MARKER = re.compile(r"x(\d+)\t")  # every excerpt starts with its own token " x{excerpt_id}"


def make_inputs(n_excerpts: int = 250, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(corpus, top_k_excerpts): excerpts of filler words, a fifth of them holding each trigger
    twice; neuron i fires on its trigger (with a strength varying by excerpt), plus faint noise."""
    rng = random.Random(seed)
    tokens = []
    for eid in range(n_excerpts):
        body = [rng.choice(FILLER) for _ in range(LENGTH - 1)]
        if eid % 5 < len(TRIGGERS):
            for position in rng.sample(range(LENGTH - 1), 2):
                body[position] = TRIGGERS[eid % 5]
        tokens.append([f" x{eid}", *body])
    acts = np.zeros((DEAD + 1, n_excerpts, LENGTH), dtype=np.float32)
    for neuron, trigger in enumerate(TRIGGERS):
        noise = np.asarray([[rng.random() * 0.05 for _ in range(LENGTH)] for _ in tokens])
        acts[neuron] = noise
        for eid, excerpt in enumerate(tokens):
            for position, token in enumerate(excerpt):
                if token == trigger:
                    acts[neuron, eid, position] = 4.0 + 0.01 * eid
    records = []
    for neuron in range(DEAD + 1):
        top = sorted(range(n_excerpts), key=lambda e: (-acts[neuron, e].max(), e))[:20]
        others = [e for e in range(n_excerpts) if e not in top]
        drawn = rng.sample(others, 25)
        random_ids, reference_ids = drawn[:15], drawn[15:]  # scored; the base rates
        records.append(
            {
                "layer": 3,
                "neuron": neuron,
                "top_excerpt_ids": top,
                "top_activations": [acts[neuron, e].tolist() for e in top],
                "random_excerpt_ids": random_ids,
                "random_activations": [acts[neuron, e].tolist() for e in random_ids],
                "reference_excerpt_ids": reference_ids,
                "reference_activations": [acts[neuron, e].tolist() for e in reference_ids],
            }
        )
    corpus = pl.DataFrame(
        {
            "excerpt_id": pl.Series(range(n_excerpts), dtype=pl.Int64),
            "text": ["".join(t) for t in tokens],
            "tokens": tokens,
            "token_ids": [[0] * LENGTH for _ in tokens],
            "source": ["synthetic"] * n_excerpts,
            "license": ["CC0"] * n_excerpts,
        }
    )
    return corpus, split_records(pl.DataFrame(records))


@pytest.fixture(scope="module")
def inputs() -> tuple[pl.DataFrame, pl.DataFrame]:
    return make_inputs()


@pytest.fixture(scope="module")
def excerpts(inputs) -> pl.DataFrame:
    corpus, top_k = inputs
    return neuron_excerpts(top_k, corpus)


def headline(scores: pl.DataFrame, neuron: int) -> float:
    row = scores.filter(
        (pl.col("neuron") == neuron)
        & (pl.col("scored_on") == "top_and_random")
        & (pl.col("split") == "test")
    )
    assert row.height == 1
    return row["ev_correlation"][0]


# --- offline ---------------------------------------------------------------------------------


def test_offline_path_end_to_end(excerpts):
    profiles = load_profiles({})
    explainer = profiles.explainer("token-statistics-baseline")
    simulator = profiles.simulator("lexical-baseline")
    seen = []
    explanations, calls = explain(
        explainer, excerpts, client=None, progress=lambda *a: seen.append(a)
    )
    assert calls == [] and seen[-1] == (DEAD + 1, DEAD + 1)
    assert explanations.schema == pl.Schema(EXPLANATIONS_SCHEMA)
    assert explanations["error"].null_count() == DEAD + 1
    text = dict(zip(explanations["neuron"], explanations["explanation"], strict=True))
    for neuron, trigger in enumerate(TRIGGERS):
        assert f'"{trigger.strip()}"' in text[neuron]
    assert explanations["explainer_hash"].unique().to_list() == [explainer.hash]

    simulations, calls = simulate(simulator, explanations, excerpts, client=None)
    assert calls == [] and simulations.schema == pl.Schema(SIMULATIONS_SCHEMA)
    assert set(simulations["split"]) == {"calibration", "valid", "test"}  # never train
    assert simulations.height == (DEAD + 1) * 30  # 5 top + 5 random in each scoring split

    scores = score(simulations, calibrate=False)
    assert scores.schema == pl.Schema(SCORES_SCHEMA)
    for neuron in range(len(TRIGGERS)):
        assert headline(scores, neuron) > 0.8
    assert math.isnan(headline(scores, DEAD))  # nothing fires: correlation is undefined
    assert scores.height == (DEAD + 1) * 3 * 3  # splits × (top, random, top_and_random)

    summary = score_summary(scores)
    assert summary.height == 1
    row = summary.row(0, named=True)
    assert row["neurons"] == DEAD + 1 and row["scored"] == len(TRIGGERS)
    assert row["count_ge_0_8"] == len(TRIGGERS) and row["mean"] > 0.8


def test_the_summary_counts_the_neurons_it_drops_per_layer_and_says_why(excerpts):
    profiles = load_profiles({})
    explanations, _ = explain(
        profiles.explainer("token-statistics-baseline"), excerpts, client=None
    )
    # Neuron 0's explanation failed; neuron 1 lost its test split to a dead server; neuron 2
    # has no test simulation at all.
    explanations = explanations.with_columns(
        explanation=pl.when(pl.col("neuron") == 0).then(None).otherwise("explanation"),
        error=pl.when(pl.col("neuron") == 0).then(pl.lit("HTTP 503: down")).otherwise("error"),
    )
    simulations, _ = simulate(
        profiles.simulator("lexical-baseline"), explanations, excerpts, client=None
    )
    test = (pl.col("neuron") == 1) & (pl.col("split") == "test")
    simulations = simulations.with_columns(
        error=pl.when(test).then(pl.lit("connection error: refused")).otherwise("error"),
        expected_activations=pl.when(test).then(None).otherwise("expected_activations"),
    ).filter(~((pl.col("neuron") == 2) & (pl.col("split") == "test")))
    scores = score(simulations, calibrate=False)

    row = score_summary(scores, None, explanations, simulations).row(0, named=True)
    assert row["neurons"] == DEAD + 1 - 3 and row["dropped"] == 3
    assert row["dropped_why"] == (
        "explanation: HTTP 503 x 1; no test simulation x 1; simulation: connection error x 1"
    )
    assert "dropped" not in score_summary(scores).columns  # without them, as before


def test_baseline_explainer_never_reads_valid_or_test(excerpts):
    explainer = load_profiles({}).explainer("token-statistics-baseline")
    before, _ = explain(explainer, excerpts, client=None)
    held_out = pl.col("split").is_in(["valid", "test"])
    scrambled = excerpts.with_columns(
        tokens=pl.when(held_out).then(pl.lit([" zebra"] * LENGTH)).otherwise("tokens"),
        activations=pl.when(held_out).then(pl.lit([9.0] * LENGTH)).otherwise("activations"),
    )
    after, _ = explain(explainer, scrambled, client=None)
    assert after["explanation"].to_list() == before["explanation"].to_list()


def test_neuron_excerpts_refuses_excerpts_of_another_corpus(inputs):
    corpus, top_k = inputs
    with pytest.raises(Exception, match="not in the corpus"):
        neuron_excerpts(top_k, corpus.filter(pl.col("excerpt_id") != top_k["excerpt_id"][0]))
    shorter = corpus.with_columns(pl.col("tokens").list.head(LENGTH - 1))
    with pytest.raises(Exception, match="one activation per token"):
        neuron_excerpts(top_k, shorter)


def test_select_neurons():
    neurons = [NeuronId(0, i) for i in reversed(range(10))]
    assert select_neurons(neurons, "all") == sorted(neurons, key=lambda n: n.neuron)
    assert select_neurons(neurons, "first:3") == [NeuronId(0, 0), NeuronId(0, 1), NeuronId(0, 2)]
    picked = select_neurons(neurons, "random:4:7")
    assert len(picked) == 4 and picked == select_neurons(neurons, "random:4:7")
    assert picked == sorted(picked, key=lambda n: n.neuron)
    assert select_neurons(neurons, "random:4:8") != picked
    assert len(select_neurons(neurons, "first:50")) == 10
    # A run over several layers takes the sample in each layer.
    two_layers = [NeuronId(layer, i) for layer in (3, 1) for i in range(10)]
    assert select_neurons(two_layers, "first:2") == [
        NeuronId(1, 0),
        NeuronId(1, 1),
        NeuronId(3, 0),
        NeuronId(3, 1),
    ]


def test_scores_match_the_reference_functions_and_calibrate_on_the_calibration_split():
    rng = np.random.default_rng(1)
    rows = []
    for neuron in range(6):
        for split in ("calibration", "valid", "test"):
            for kind in ("top", "random"):
                for rank in range(5):
                    true = rng.gamma(1.0, 2.0, LENGTH).astype(np.float32)
                    expected = np.clip(0.5 * true + rng.normal(0, 1, LENGTH) + 1, 0, 10)
                    rows.append(
                        {
                            "layer": 0,
                            "neuron": neuron,
                            "explainer": "e",
                            "explainer_hash": "h",
                            "simulator": "s",
                            "simulator_hash": "k",
                            "sample": 0,
                            "excerpt_id": 1000 * neuron + 10 * rank + (kind == "random"),
                            "split": split,
                            "kind": kind,
                            "true_activations": true.tolist(),
                            "expected_activations": expected.tolist(),
                            "call_ids": [],
                            "error": None,
                        }
                    )
    rows[7]["error"], rows[7]["expected_activations"] = "HTTP 500", None  # left out of scores
    simulations = pl.DataFrame(rows, schema=SIMULATIONS_SCHEMA).sample(fraction=1.0, shuffle=True)
    ok = simulations.filter(pl.col("error").is_null())

    def pooled(neuron: int, split: str, kinds: tuple[str, ...]) -> tuple[list, list, list]:
        part = ok.filter(
            (pl.col("neuron") == neuron) & (pl.col("split") == split) & pl.col("kind").is_in(kinds)
        )
        return (
            part["true_activations"].to_list(),
            part["expected_activations"].to_list(),
            sorted(part["excerpt_id"].to_list()),
        )

    for calibrate in (False, True):
        scores = score(simulations, calibrate=calibrate)
        assert scores.height == 6 * 3 * 3
        for row in scores.iter_rows(named=True):
            kinds = (
                ("top", "random") if row["scored_on"] == "top_and_random" else (row["scored_on"],)
            )
            true, expected, ids = pooled(row["neuron"], row["split"], kinds)
            assert sorted(row["excerpt_ids"]) == ids
            assert row["calibrated"] == (calibrate and row["split"] != "calibration")
            if row["calibrated"]:
                cal_true, cal_expected, _ = pooled(row["neuron"], "calibration", ("top", "random"))
                expected = fit_linear_calibration(cal_true, cal_expected).apply(expected)
            want = score_all(true, expected)
            assert row["ev_correlation"] == pytest.approx(want.ev_correlation, rel=1e-6)
            assert row["rsquared"] == pytest.approx(want.rsquared, rel=1e-6)
            assert row["absolute_dev_explained"] == pytest.approx(
                want.absolute_dev_explained, rel=1e-6
            )


def test_summary_picks_each_neurons_sample_on_valid_not_test():
    def row(neuron: int, sample: int, split: str, ev: float) -> dict:
        return {
            "layer": 1,
            "neuron": neuron,
            "explainer": "e",
            "explainer_hash": "h",
            "simulator": "s",
            "simulator_hash": "k",
            "sample": sample,
            "scored_on": "top_and_random",
            "split": split,
            "ev_correlation": ev,
            "rsquared": 0.0,
            "absolute_dev_explained": 0.0,
            "excerpt_ids": [],
            "calibrated": False,
        }

    scores = pl.DataFrame(
        [
            row(0, 0, "valid", 0.9),  # best on valid ...
            row(0, 0, "test", 0.5),  # ... so its test score counts, not sample 1's
            row(0, 1, "valid", 0.1),
            row(0, 1, "test", 0.95),
            row(1, 0, "valid", 0.3),
            row(1, 0, "test", 0.85),
            row(2, 0, "valid", float("nan")),
            row(2, 0, "test", float("nan")),
        ],
        schema=SCORES_SCHEMA,
    )
    summary = score_summary(scores).row(0, named=True)
    assert summary["neurons"] == 3 and summary["scored"] == 2
    assert summary["mean"] == pytest.approx((0.5 + 0.85) / 2)
    assert summary["count_ge_0_8"] == 1


# --- LLM profiles against the scripted server ------------------------------------------------


def rank0_neurons(excerpts: pl.DataFrame) -> dict[int, int]:
    """The excerpt shown first to the explainer (train top rank 0) -> its neuron."""
    first = excerpts.filter((pl.col("split") == "train") & (pl.col("rank") == 0))
    return dict(zip(first["excerpt_id"], first["neuron"], strict=True))


FAILING, MALFORMED = 2, 3  # neurons whose explainer call fails / answers nothing readable


def explainer_handler(excerpts: pl.DataFrame, *, faults: bool = True):
    neuron_of = rank0_neurons(excerpts)

    def handler(received):
        messages = received.body["messages"]
        assert messages[0]["content"] == EXPLAINER_SYSTEM_MESSAGE
        neuron = neuron_of[int(MARKER.search(messages[-1]["content"])[1])]
        n = received.body.get("n", 1)
        if faults and neuron == FAILING:
            return server_error(503)
        if faults and neuron == MALFORMED:
            return Answer(["\n"] * n)
        word = TRIGGERS[neuron].strip() if neuron < len(TRIGGERS) else "nothing"
        return Answer([f" the word {word}, take {i}. More text" for i in range(n)])

    return handler


def echo_handler(received):
    """Completions with echo: at each target `unknown`, 8 with p = 0.5 on the explained word."""
    prompt = received.body["prompt"]
    assert received.body["echo"] and received.body["max_tokens"] == 1
    word = re.findall(r"does is find the word (\w+)", prompt)[-1]
    target_start = prompt.rindex("<start>\n")
    lines = prompt[target_start:].split("\n")[1:-2]
    values = iter(["8" if line.split("\t")[0].strip() == word else "0" for line in lines])
    echo, offset = [], 0
    for i, token in enumerate(tokenize(prompt)):
        if i == 0:
            echo.append(Tok(token, None, None))
        elif token == "unknown" and offset > target_start:
            value = next(values)
            echo.append(Tok(token, -5.0, {value: math.log(0.5), "0": math.log(0.5)}))
        else:
            echo.append(Tok(token, -1.0))
        offset += len(token)
    return Answer([""], echo_tokens=echo)


def llm_explainer(server: LLMServer, **overrides):
    settings = {"kind": "llm", "model": "m", "base_url": server.url, "n": 3, "neuron_sample": "all"}
    return explainer_profile("scripted", settings | overrides)


def llm_simulator(server: LLMServer, method: str):
    return simulator_profile(
        method, {"kind": "llm", "method": method, "model": "m", "base_url": server.url}
    )


def test_llm_explanations_with_n_samples_and_per_neuron_errors(excerpts, tmp_path):
    with LLMServer(explainer_handler(excerpts)) as server:
        profile = llm_explainer(server)
        with LLMClient(profile.endpoint(), tmp_path / "cache", sleep=no_sleep) as client:
            seen = []
            frame, calls = explain(
                profile, excerpts, client=client, progress=lambda *a: seen.append(a)
            )
    assert frame.schema == pl.Schema(EXPLANATIONS_SCHEMA)
    assert len(calls) == DEAD + 1 and seen[-1] == (DEAD + 1, DEAD + 1)
    assert frame.height == (DEAD + 1) * 3  # every (neuron, sample) once, failed ones included
    good = frame.filter(pl.col("error").is_null())
    assert set(good["neuron"]) == {0, 1, DEAD}
    cat = good.filter(pl.col("neuron") == 0)
    assert cat["explanation"].to_list() == [f"the word cat, take {i}" for i in range(3)]
    assert cat["sample"].to_list() == [0, 1, 2]
    assert cat["call_ids"].to_list() == [[calls[0].call_id]] * 3
    assert cat["prompt_hash"].n_unique() == 1 and cat["prompt_hash"][0] is not None
    failed = frame.filter(pl.col("neuron") == FAILING)
    assert failed["explanation"].null_count() == 3
    assert all("HTTP 503" in e and "gave up" in e for e in failed["error"])
    malformed = frame.filter(pl.col("neuron") == MALFORMED)
    assert all("no explanation" in e for e in malformed["error"])

    check_error_fraction(frame, 0.5, stage="explanations")  # 6 of 15 rows
    with pytest.raises(TooManyErrors) as raised:
        check_error_fraction(frame, 0.2, stage="explanations", audit="m/explainer_calls")
    message = str(raised.value)
    assert message.startswith("explanations: 6 of 15 rows failed (40%), more than")
    assert "HTTP 503 x 3, e.g. 'HTTP 503: " in message and message.count("e.g.") == 2
    assert message.endswith("Every call made is in m/explainer_calls.")


def test_a_failed_stage_says_in_one_short_line_what_failed_by_kind():
    long = "x" * 2_500  # a server's error page, quoted whole by the reply
    errors = [f"HTTP 500: {long} (gave up after 10 attempts)"] * 40
    errors += [
        f"the simulator answered {i} of 16 tokens (more than 25% unanswered)" for i in range(4)
    ]
    errors += ["timed out after 300 s"] * 3 + ["a", "b", None]
    frame = pl.DataFrame({"error": errors}, schema={"error": pl.Utf8})
    with pytest.raises(TooManyErrors) as raised:
        check_error_fraction(frame, 0.2, stage="simulations", audit="m/simulator_calls")
    message = str(raised.value)
    assert len(message) < 800 and "\n" not in message
    assert "HTTP 500 x 40" in message
    assert "the simulator answered N of N tokens x 4" in message
    assert "timed out after N s x 3" in message and "and 2 more kinds" in message


def test_explainer_prompts_never_hold_valid_or_test_excerpts(excerpts):
    neuron_of = rank0_neurons(excerpts)
    with LLMServer(explainer_handler(excerpts)) as server:
        profile = llm_explainer(server, n=1)
        with LLMClient(profile.endpoint(), sleep=no_sleep) as client:
            explain(profile, excerpts, client=client)
        prompts = [r.body["messages"][-1]["content"] for r in server.requests]
    held = {
        neuron: set(part["excerpt_id"])
        for (neuron,), part in excerpts.filter(pl.col("split").is_in(["valid", "test"]))
        .partition_by("neuron", as_dict=True)
        .items()
    }
    train = {  # what the LLM explainer is shown: the train top records only
        neuron: set(part["excerpt_id"])
        for (neuron,), part in excerpts.filter(
            (pl.col("split") == "train") & (pl.col("kind") == "top")
        )
        .partition_by("neuron", as_dict=True)
        .items()
    }
    assert prompts
    for prompt in prompts:
        shown = {int(m) for m in MARKER.findall(prompt)}
        neuron = neuron_of[int(MARKER.search(prompt)[1])]
        assert shown == train[neuron]
        assert not shown & held[neuron]


def explanations_frame(texts: dict[int, str | None]) -> pl.DataFrame:
    """An explanations table of one sample per neuron; None stands for a failed explanation."""
    rows = [
        {
            "layer": 3,
            "neuron": neuron,
            "explainer": "e",
            "explainer_hash": "h",
            "sample": 0,
            "explanation": text,
            "prompt_hash": None,
            "call_ids": [],
            "error": "failed" if text is None else None,
        }
        for neuron, text in texts.items()
    ]
    return pl.DataFrame(rows, schema=EXPLANATIONS_SCHEMA)


def test_llm_simulations_with_chat_logprobs(excerpts, tmp_path):
    words = {n: f"the word {trigger.strip()}" for n, trigger in enumerate(TRIGGERS)}
    explanations = explanations_frame(words | {DEAD: None})  # DEAD's explanation failed
    scoring = excerpts.filter((pl.col("split") == "valid") & (pl.col("neuron") < DEAD))
    scoring = scoring.sort("neuron", "kind", "rank")
    unreadable, failing = scoring["excerpt_id"][0], scoring["excerpt_id"][-1]
    with LLMServer(chat_simulator_handler(unreadable, failing)) as server:
        profile = llm_simulator(server, "chat_logprobs")
        with LLMClient(profile.endpoint(), tmp_path / "cache", sleep=no_sleep) as client:
            frame, calls = simulate(profile, explanations, excerpts, client=client)
    assert frame.schema == pl.Schema(SIMULATIONS_SCHEMA)
    assert frame.height == len(TRIGGERS) * 30 == len(calls)  # the failed explanation is skipped
    assert frame["simulator_hash"].unique().to_list() == [profile.hash]
    failed = frame.filter(pl.col("error").is_not_null())
    assert set(failed["excerpt_id"]) == {unreadable, failing}
    assert failed["expected_activations"].null_count() == failed.height
    for excerpt_id, error in zip(failed["excerpt_id"], failed["error"], strict=True):
        assert ("answered none" in error) if excerpt_id == unreadable else ("HTTP 500" in error)
    good = frame.filter(pl.col("error").is_null())
    tokens = dict(zip(excerpts["excerpt_id"], excerpts["tokens"], strict=True))
    for row in good.head(40).iter_rows(named=True):
        word = TRIGGERS[row["neuron"]]
        want = [6.0 if t == word else 0.75 for t in tokens[row["excerpt_id"]]]
        assert row["expected_activations"] == pytest.approx(want, rel=1e-5)
        assert row["call_ids"] and len(row["true_activations"]) == LENGTH
    # Each reply was read as it arrived; the calls kept for the audit hold no top logprobs.
    assert all(logprobs is None for call in calls for logprobs in call.logprobs)
    assert all(call.logprobs for call in calls if call.ok)  # one entry per choice, emptied
    scores = score(frame, calibrate=True)
    for neuron in range(len(TRIGGERS)):
        assert headline(scores, neuron) > 0.8


def test_llm_simulations_with_all_at_once_echo(excerpts, tmp_path):
    explanations = explanations_frame({0: "the word cat"})
    with LLMServer(echo_handler) as server:
        profile = llm_simulator(server, "all_at_once")
        with LLMClient(profile.endpoint(), tmp_path / "cache", sleep=no_sleep) as client:
            frame, calls = simulate(profile, explanations, excerpts, client=client)
        assert server.count(COMPLETIONS_PATH) == len(calls) == 30
    assert frame["error"].null_count() == 30
    tokens = dict(zip(excerpts["excerpt_id"], excerpts["tokens"], strict=True))
    for row in frame.iter_rows(named=True):
        want = [4.0 if t == " cat" else 0.0 for t in tokens[row["excerpt_id"]]]
        assert row["expected_activations"] == pytest.approx(want)
    assert headline(score(frame, calibrate=False), 0) > 0.8


def test_plain_text_simulator_reads_the_written_numbers(excerpts):
    explanations = explanations_frame({1: "the word dog"})
    with LLMServer(chat_simulator_handler()) as server:
        profile = llm_simulator(server, "plain_text")
        with LLMClient(profile.endpoint(), sleep=no_sleep) as client:
            frame, _ = simulate(profile, explanations, excerpts, client=client)
        assert not any(r.body.get("logprobs") for r in server.requests)
    row = frame.filter(pl.col("error").is_null()).row(0, named=True)
    tokens = dict(zip(excerpts["excerpt_id"], excerpts["tokens"], strict=True))
    assert row["expected_activations"] == [
        8.0 if t == " dog" else 1.0 for t in tokens[row["excerpt_id"]]
    ]


def test_rerun_with_the_same_cache_makes_no_requests(excerpts, tmp_path):
    explainer_answers = explainer_handler(excerpts, faults=False)
    simulator_answers = chat_simulator_handler()

    def handler(received):
        if received.body["messages"][0]["content"] == EXPLAINER_SYSTEM_MESSAGE:
            return explainer_answers(received)
        return simulator_answers(received)

    runs = []
    with LLMServer(handler) as server:
        explainer = llm_explainer(server, n=2, neuron_sample="first:2")
        simulator = llm_simulator(server, "chat_logprobs")
        for _ in range(2):
            before = server.count()
            with LLMClient(explainer.endpoint(), tmp_path / "cache", sleep=no_sleep) as client:
                explanations, explain_calls = explain(explainer, excerpts, client=client)
            with LLMClient(simulator.endpoint(), tmp_path / "cache", sleep=no_sleep) as client:
                simulations, simulate_calls = simulate(
                    simulator, explanations, excerpts, client=client
                )
            calls = explain_calls + simulate_calls
            runs.append((server.count() - before, explanations, simulations, calls))
    (first_requests, *first), (second_requests, *second) = runs
    assert first_requests == len(first[2]) == 2 * (1 + 2 * 30)
    assert second_requests == 0
    assert all(call.cached for call in second[2])
    assert second[0].equals(first[0]) and second[1].equals(first[1])


def test_an_llm_stage_needs_a_client_for_its_own_endpoint(excerpts):
    with LLMServer() as server:
        profile = llm_explainer(server)
        with pytest.raises(Exception, match="needs a client"):
            explain(profile, excerpts, client=None)
        other = llm_explainer(server, model="other")
        with LLMClient(other.endpoint()) as client, pytest.raises(Exception, match="profile names"):
            explain(profile, excerpts, client=client)


def test_profile_hash_follows_what_changes_the_output(monkeypatch):
    settings = {"kind": "llm", "model": "m", "api_key_env": "KEY"}
    base = explainer_profile("a", settings)
    assert explainer_profile("renamed", settings).hash == base.hash
    assert explainer_profile("a", settings | {"max_concurrency": 64}).hash == base.hash
    assert explainer_profile("a", settings | {"timeout_s": 5.0}).hash == base.hash
    for change in ({"temperature": 0.7}, {"n": 3}, {"model": "m2"}, {"prompt": "token-list-v1"}):
        assert explainer_profile("a", settings | change).hash != base.hash
    simulator = simulator_profile("s", settings | {"method": "chat_logprobs"})
    baseline = load_profiles({}).explainer("token-statistics-baseline")
    before = {"explainer": base.hash, "simulator": simulator.hash, "baseline": baseline.hash}

    # Editing the few-shot set the profiles name changes their hashes, not the baseline's.
    default = FEW_SHOT_SETS["default"]
    edited = (default[0], default[1], replace(default[2], explanation="surnames after titles"))
    monkeypatch.setitem(FEW_SHOT_SETS, "default", edited)
    assert base.hash != before["explainer"]
    assert simulator.hash != before["simulator"]
    assert baseline.hash == before["baseline"]


def lines_reply(tokens: list[str], values: dict[int, str], *, logprobs: bool = True) -> list[Tok]:
    """A chat reply writing `token<TAB>value` for the positions in `values` only."""
    reply: list[Tok] = []
    for i, token in enumerate(tokens):
        if i not in values:
            continue
        top = {values[i]: math.log(0.9), "0": math.log(0.1)} if logprobs else None
        reply += [Tok(token), Tok("\t"), Tok(values[i], math.log(0.9) if logprobs else None, top)]
        reply.append(Tok("\n"))
    return reply[:-1]


def test_unanswered_positions_are_recorded_not_zeroed_and_a_thin_reply_is_an_error(
    excerpts, tmp_path
):
    explanations = explanations_frame({0: "the word cat"})
    rows = excerpts.filter((pl.col("neuron") == 0) & (pl.col("split") == "test")).sort("rank")
    thin, cut = rows["excerpt_id"][0], rows["excerpt_id"][1]

    def handler(received):
        tokens = target_tokens(received.body["messages"][-1]["content"])
        if tokens[0] == f" x{thin}":  # only a third of the tokens answered
            return Answer([lines_reply(tokens, {i: "2" for i in range(0, LENGTH, 3)})])
        answered = {i: ("8" if t == " cat" else "1") for i, t in enumerate(tokens) if i != 5}
        reason = "length" if tokens[0] == f" x{cut}" else "stop"
        return Answer([lines_reply(tokens, answered)], finish_reason=reason)

    with LLMServer(handler) as server:
        profile = llm_simulator(server, "chat_logprobs")
        with LLMClient(profile.endpoint(), tmp_path / "cache", sleep=no_sleep) as client:
            frame, _ = simulate(profile, explanations, excerpts, client=client)
    error = frame.filter(pl.col("excerpt_id") == thin).row(0, named=True)
    assert error["expected_activations"] is None and error["missing_positions"]
    assert re.search(r"answered [1-6] of 16 tokens .*max_missing_share", error["error"])
    good = frame.filter(pl.col("error").is_null())
    # One line left out: one position unanswered (which one, where neighbours repeat a token,
    # is the aligner's call), stored as such and as a null value, never a zero.
    for positions, values in good.select("missing_positions", "expected_activations").iter_rows():
        assert len(positions) == 1 and values[positions[0]] is None
        assert sum(v is None for v in values) == 1
    assert set(good["method"]) == {"chat-logprobs"}
    assert good.filter(pl.col("truncated"))["excerpt_id"].to_list() == [cut]
    scores = score(frame, calibrate=False).filter(pl.col("scored_on") == "top_and_random")
    test = scores.filter(pl.col("split") == "test").row(0, named=True)
    assert (test["tokens"], test["missing_tokens"]) == (9 * (LENGTH - 1), 9)  # 9 rows scored


def test_a_reply_without_logprobs_is_recorded_as_read_as_plain_text(excerpts, tmp_path):
    explanations = explanations_frame({0: "the word cat"})

    def handler(received):
        tokens = target_tokens(received.body["messages"][-1]["content"])
        values = {i: ("8" if t == " cat" else "1") for i, t in enumerate(tokens)}
        # The first request (the stage's probe) gets logprobs; the rest do not.
        first = server.count() == 1
        return Answer([lines_reply(tokens, values, logprobs=first)], logprobs=first)

    with LLMServer(handler) as server:
        profile = llm_simulator(server, "chat_logprobs")
        with LLMClient(profile.endpoint(), tmp_path / "cache", sleep=no_sleep) as client:
            frame, _ = simulate(profile, explanations, excerpts, client=client)
        assert server.count() == frame.height  # the probe's reply is the stage's, not a repeat
    methods = frame.group_by("method").len()  # the fallback says so, row by row
    assert dict(methods.iter_rows()) == {"plain-text": frame.height - 1, "chat-logprobs": 1}
    plain = frame.filter(pl.col("method") == "plain-text")
    assert set(plain["sampled_positions"].list.len()) == {LENGTH}


def test_a_server_without_chat_logprobs_is_refused_before_the_stage(excerpts):
    explanations = explanations_frame({0: "the word cat"})
    with LLMServer(lambda _: Answer(["1"], logprobs=False)) as server:
        profile = llm_simulator(server, "chat_logprobs")
        client = LLMClient(profile.endpoint(), sleep=no_sleep)
        with client, pytest.raises(ServerUnsuitable, match=r"no logprobs.*plain_text"):
            simulate(profile, explanations, excerpts, client=client)
        assert server.count() == 1


def test_the_token_list_explainer_shows_tokens_ranked_over_the_corpus(excerpts):
    ranked = {NeuronId(3, n): [f" corpus{n}_{i}" for i in range(120)] for n in range(DEAD + 1)}
    with LLMServer(lambda _: " tokens of a kind") as server:
        profile = llm_explainer(server, n=1, prompt="token-list-v1")
        with LLMClient(profile.endpoint(), sleep=no_sleep) as client:
            frame, _ = explain(profile, excerpts, client=client, ranked_tokens=ranked)
        target = server.requests[0].body["messages"][-1]["content"]
    assert frame["error"].null_count() == frame.height
    shown = re.findall(r'" (corpus\d+_\d+)"', target)
    assert len(shown) == 50 and all(int(t.split("_")[1]) < 100 for t in shown)
    assert "cat" not in target  # nothing from the train records themselves
