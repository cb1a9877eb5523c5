"""The cost model of a run: LLM calls, tokens, dollars and hours for every neuron a run over a
whole model would explain, before a call is paid.

Every neuron of a run has the same shape (its samples are full), so one prototype neuron built
from the records settings, with placeholder text, goes through the stages' own request builders:
the call counts are those of a run (explanations, simulations and the chance floor exactly when
no call fails; revision rounds at most, since what they simulate depends on the data), and the
prompts are the prompts a run sends, counted with `estimate_tokens`. Completion tokens are the
replies' budgets where a model writes freely (explanations, generated texts), and the expected
reply where its form is fixed (a chat simulator's `token<tab>number` lines). Cache-eligible
tokens are the prefix every prompt of a stage shares (system message and few-shot examples),
which providers with prompt caching bill at a discount.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import polars as pl

from autointerp.activations.data_model import N_BANDS, ActivationRecord, NeuronId
from autointerp.activations.excerpts import excerpts_of_records, records_by_neuron
from autointerp.activations.sampling import select_neurons
from autointerp.activations.splits import SCORING_SPLITS
from autointerp.config.profiles import ExplainerProfile, SimulatorProfile
from autointerp.config.settings import RecordsSpec, RevisionSpec
from autointerp.explain.explanations import explanation_request
from autointerp.explain.prompt_format import estimate_tokens, record_lines
from autointerp.revise.counterexamples import Counterexample
from autointerp.revise.generation import generation_request
from autointerp.revise.revisions import revision_request
from autointerp.score.floor import FLOOR_SPLIT
from autointerp.simulate.simulations import simulation_request
from autointerp.simulate.simulator_prompt import ALL_AT_ONCE

# What a typical explanation looks like, for the simulators' prompts.
EXPLANATION = 'the word "sea" and words about ships, often after "the"'
RANKED_TOKENS = 50  # the token-list prompt shows 50 tokens


@dataclass(frozen=True)
class StageCost:
    """One stage's calls to one profile over the whole model."""

    stage: str
    profile: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cacheable_tokens: int  # prompt tokens in the prefix every call of the stage shares
    cost_usd: float | None  # None: the profile has no prices
    exact: bool  # False: an upper bound (what a revision round simulates depends on the data)


@dataclass(frozen=True)
class Estimate:
    model: str
    layers: int
    neurons_per_layer: int
    stages: list[StageCost]

    @property
    def calls(self) -> int:
        return sum(s.calls for s in self.stages)

    @property
    def prompt_tokens(self) -> int:
        return sum(s.prompt_tokens for s in self.stages)

    @property
    def completion_tokens(self) -> int:
        return sum(s.completion_tokens for s in self.stages)

    @property
    def cacheable_share(self) -> float:
        return sum(s.cacheable_tokens for s in self.stages) / max(1, self.prompt_tokens)

    @property
    def cost_usd(self) -> float | None:
        costs = [s.cost_usd for s in self.stages]
        return None if None in costs else sum(costs)  # type: ignore[arg-type]

    def hours(self, requests_per_minute: float, tokens_per_minute: float | None = None) -> float:
        """Wall time at a rate limit: requests per minute, and tokens per minute if given."""
        minutes = self.calls / requests_per_minute
        if tokens_per_minute:
            minutes = max(
                minutes, (self.prompt_tokens + self.completion_tokens) / tokens_per_minute
            )
        return minutes / 60


@dataclass(frozen=True)
class _Prompts:
    """The token counts of a stage's prompts for the prototype neurons."""

    prompt: int  # per call
    cacheable: int


def _prefix_tokens(a: str, b: str) -> int:
    """Tokens of the text two prompts of a stage share from their start."""
    shared = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), len(a))
    return estimate_tokens(a[:shared])


def _text(request) -> str:
    messages = getattr(request, "messages", None)
    return "".join(m["content"] for m in messages) if messages else request.prompt


def _measure(build: Callable[[int], object]) -> _Prompts:
    """`build(neuron)` for two prototype neurons (different placeholder text): the tokens of
    one prompt, and of the prefix both share."""
    first, second = _text(build(0)), _text(build(1))
    return _Prompts(estimate_tokens(first), _prefix_tokens(first, second))


def prototype_excerpts(spec: RecordsSpec, excerpt_tokens: int) -> pl.DataFrame:
    """Two neurons' excerpts (a neuron_excerpts frame) with every sample full, as a run over a
    large corpus gives every neuron; each neuron's excerpts hold a placeholder word of its own."""
    counts = {"top": spec.top_k, "random": spec.random_k, "reference": spec.reference_k}
    rows, corpus = [], []
    next_id = 0
    for neuron in (0, 1):
        row: dict[str, object] = {"layer": 0, "neuron": neuron}
        for kind, k in counts.items():
            ids = list(range(next_id, next_id + k))
            next_id += k
            # Sparse activations, as most neurons have: one token in eight fires.
            row[f"{kind}_excerpt_ids"] = ids
            row[f"{kind}_activations"] = [
                [9.0 if t % 8 == 0 else 0.0 for t in range(excerpt_tokens)] for _ in ids
            ]
            corpus += [(i, [f" word{neuron}"] * excerpt_tokens) for i in ids]
        rows.append(row)
    records = pl.DataFrame(rows).with_columns(pl.col("layer", "neuron").cast(pl.Int32))
    corpus_frame = pl.DataFrame(corpus, schema=["excerpt_id", "tokens"], orient="row")
    return excerpts_of_records(records, corpus_frame)


def _price(profile: ExplainerProfile | SimulatorProfile, prompt: int, completion: int):
    if profile.prompt_price_per_m is None or profile.completion_price_per_m is None:
        return None
    return (prompt * profile.prompt_price_per_m + completion * profile.completion_price_per_m) / 1e6


def _stage(stage, profile, calls, prompts: _Prompts, completion: int, exact=True) -> StageCost:
    prompt_tokens = calls * prompts.prompt
    completion_tokens = calls * completion
    return StageCost(
        stage=stage,
        profile=profile.name,
        calls=calls,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cacheable_tokens=calls * prompts.cacheable,
        cost_usd=_price(profile, prompt_tokens, completion_tokens),
        exact=exact,
    )


def _simulation(simulator: SimulatorProfile, tokens: Sequence[str]) -> tuple[_Prompts, int]:
    """A simulator call's prompt tokens and its reply's (none for all-at-once: it echoes)."""
    prompts = _measure(
        lambda n: simulation_request(
            simulator.method, EXPLANATION, [f" word{n}"] * len(tokens), simulator.few_shot
        )
    )
    if simulator.method == ALL_AT_ONCE:
        return prompts, 0
    return prompts, estimate_tokens(record_lines(tokens, [0] * len(tokens)))


def estimate(
    *,
    model: str,
    layers: int,
    neurons_per_layer: int,
    excerpt_tokens: int,
    records: RecordsSpec,
    explainer: ExplainerProfile,
    simulator: SimulatorProfile,
    floor_sample: str,
    revisions: RevisionSpec | None = None,
    neuron_sample: str | None = None,
) -> Estimate:
    """The LLM cost of a run of `explainer` and `simulator` over every layer of a model.

    `neuron_sample` overrides the explainer's (e.g. "all": every neuron of the model); the
    revision rounds of `revisions` (with this explainer and simulator) are counted when given.
    """
    excerpts = prototype_excerpts(records, excerpt_tokens)
    train = records_by_neuron(excerpts, split="train", kind="top")
    one = excerpts.filter(pl.col("neuron") == 0)
    scored = one.filter(pl.col("split").is_in(SCORING_SPLITS)).height
    tested = one.filter(pl.col("split") == FLOOR_SPLIT).height
    tokens = one["tokens"][0].to_list()
    neurons = [NeuronId(layer, n) for layer in range(layers) for n in range(neurons_per_layer)]
    explained = select_neurons(neurons, neuron_sample or explainer.neuron_sample)
    floor = select_neurons(explained, floor_sample)
    # A layer with a single sampled neuron has no other neuron's explanation to borrow.
    per_layer = pl.Series([n.layer for n in floor]).value_counts()
    floor_neurons = int(per_layer.filter(pl.col("count") >= 2)["count"].sum())

    stages = []
    explain_prompts = _measure(
        lambda n: explanation_request(
            explainer, train[NeuronId(0, n)], [f" word{n}"] * RANKED_TOKENS
        )
    )
    stages.append(
        _stage(
            "explain",
            explainer,
            len(explained),
            explain_prompts,
            explainer.n * explainer.max_tokens,
        )
    )
    simulation, reply = _simulation(simulator, tokens)
    samples = len(explained) * explainer.n
    stages.append(_stage("simulate", simulator, samples * scored, simulation, reply))
    stages.append(_stage("chance floor", simulator, floor_neurons * tested, simulation, reply))
    if revisions is not None and revisions.rounds:
        mineable = one.filter(pl.col("split") == "train").height  # top and reference
        stages += _revision_rounds(
            revisions, explainer, simulator, explained, train, tokens, scored, mineable, records
        )
    return Estimate(model, layers, neurons_per_layer, [s for s in stages if s.calls])


def _revision_rounds(
    spec: RevisionSpec,
    explainer: ExplainerProfile,
    simulator: SimulatorProfile,
    explained: Sequence[NeuronId],
    train: dict[NeuronId, list[ActivationRecord]],
    tokens: Sequence[str],
    scored: int,
    mineable: int,
    records: RecordsSpec,
) -> list[StageCost]:
    """Per round, at most: a generation and a revision call per revised neuron to the
    explainer; to the simulator, each generated text, each mining candidate (train top and
    reference excerpts, and the quantile-band samples when mined) and the revision's scoring
    excerpts."""
    revised = len(select_neurons(explained, spec.neuron_sample))
    texts = 2 * spec.n_texts
    generation = _measure(
        lambda n: generation_request(EXPLANATION, train[NeuronId(0, n)], n_texts=spec.n_texts)
    )
    counterexamples = [
        Counterexample("activating", list(tokens), [0.0] * len(tokens), [0.0] * len(tokens))
    ] * (texts + 2 * spec.mine_k)
    revision = _measure(
        lambda n: revision_request(EXPLANATION, train[NeuronId(0, n)], counterexamples)
    )
    mined = mineable + (N_BANDS * records.quantile_k if spec.mine_quantile_samples else 0)
    simulation, reply = _simulation(simulator, tokens)
    stages = []
    for k in range(1, spec.rounds + 1):
        calls = revised * (texts + mined + scored)
        stages += [
            _stage(
                f"revision round {k}: generate",
                explainer,
                revised,
                generation,
                spec.generation_tokens_per_text * texts,
                exact=False,
            ),
            _stage(
                f"revision round {k}: revise",
                explainer,
                revised,
                revision,
                explainer.max_tokens,
                exact=False,
            ),
            _stage(f"revision round {k}: simulate", simulator, calls, simulation, reply, False),
        ]
    return stages


def format_estimate(
    result: Estimate, requests_per_minute: float, tokens_per_minute: float | None = None
) -> str:
    """The estimate as a table per stage and its totals."""
    frame = pl.DataFrame(
        [
            {
                "stage": s.stage + ("" if s.exact else " (at most)"),
                "profile": s.profile,
                "calls": s.calls,
                "prompt_tokens": s.prompt_tokens,
                "completion_tokens": s.completion_tokens,
                "cacheable_share": round(s.cacheable_tokens / max(1, s.prompt_tokens), 3),
                "usd": None if s.cost_usd is None else round(s.cost_usd, 2),
            }
            for s in result.stages
        ],
        schema={
            "stage": pl.Utf8,
            "profile": pl.Utf8,
            "calls": pl.Int64,
            "prompt_tokens": pl.Int64,
            "completion_tokens": pl.Int64,
            "cacheable_share": pl.Float64,
            "usd": pl.Float64,
        },
    )
    cost = "unpriced" if result.cost_usd is None else f"${result.cost_usd:,.2f}"
    limit = f"{requests_per_minute:g} requests/min" + (
        f", {tokens_per_minute:g} tokens/min" if tokens_per_minute else ""
    )
    with pl.Config(
        tbl_rows=-1,
        tbl_cols=-1,
        tbl_hide_dataframe_shape=True,
        tbl_width_chars=200,
        fmt_str_lengths=60,
    ):
        table = str(frame)
    return (
        f"{result.model}: {result.layers} layers x {result.neurons_per_layer:,} neurons\n"
        f"{table}\n"
        f"total: {result.calls:,} calls, {result.prompt_tokens:,} prompt tokens "
        f"({result.cacheable_share:.0%} cache-eligible), {result.completion_tokens:,} completion "
        f"tokens, {cost}; {result.hours(requests_per_minute, tokens_per_minute):,.1f} hours at "
        f"{limit}"
    )
