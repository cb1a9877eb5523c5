"""The columns of every table the stages write: one home, read by the stages that write them and
by everything that reads them back (lineage, summaries, the CLI).

Tables written by a stage carry lineage columns added by the asset that writes them (the Delta
versions of the tables read, the run id and code version); those are documented in the README's
asset graph, not here.
"""

from __future__ import annotations

import polars as pl

# top_k_excerpts: one row per (neuron, excerpt) in the reference splits.
EXCERPTS_SCHEMA = {
    "layer": pl.Int32,
    "neuron": pl.Int32,
    "split": pl.Utf8,
    "kind": pl.Utf8,
    "rank": pl.Int32,
    "excerpt_id": pl.Int64,
    "max_activation": pl.Float32,
    "activations": pl.List(pl.Float32),
}

EXPLANATIONS_SCHEMA = {
    "layer": pl.Int32,
    "neuron": pl.Int32,
    "explainer": pl.Utf8,  # the profile's name
    "explainer_hash": pl.Utf8,
    "sample": pl.Int32,
    "explanation": pl.Utf8,  # null when the row is an error
    "prompt_hash": pl.Utf8,  # null for the baseline, which has no prompt
    "call_ids": pl.List(pl.Utf8),
    "error": pl.Utf8,  # null when fine
}

SIMULATIONS_SCHEMA = {
    "layer": pl.Int32,
    "neuron": pl.Int32,
    "explainer": pl.Utf8,
    "explainer_hash": pl.Utf8,
    "simulator": pl.Utf8,
    "simulator_hash": pl.Utf8,
    "sample": pl.Int32,
    "excerpt_id": pl.Int64,
    "split": pl.Utf8,  # calibration | valid | test
    "kind": pl.Utf8,  # top | random
    "true_activations": pl.List(pl.Float32),
    # 0–10 scale; null when the row is an error, null at a position the simulator did not answer
    "expected_activations": pl.List(pl.Float32),
    "method": pl.Utf8,  # the simulator method that read the reply (a fallback says so)
    "missing_positions": pl.List(pl.Int32),  # target tokens the reply did not answer
    "sampled_positions": pl.List(pl.Int32),  # values as written, not expectations
    "folded_positions": pl.List(pl.Int32),  # 0 by the reference's fold rule (all-at-once)
    "truncated": pl.Boolean,  # the reply was cut off by max_tokens
    "call_ids": pl.List(pl.Utf8),
    "error": pl.Utf8,
}

# imported_explanations: an imported dataset's explanations with their scored simulations as
# published, one row per (neuron, sample); the imported explainer and simulator profiles write
# the explanations, simulations and scores rows of them (autointerp.interchange.imported).
IMPORTED_EXPLANATIONS_SCHEMA = {
    "layer": pl.Int32,
    "neuron": pl.Int32,
    "sample": pl.Int32,  # the explanation's position in the file's scored_explanations
    "explanation": pl.Utf8,
    # As stored in the file, pooled over its scored excerpts; NaN where it stores none.
    "ev_correlation": pl.Float64,
    "rsquared": pl.Float64,
    "absolute_dev_explained": pl.Float64,
    "calibrated": pl.Boolean,  # the stored scores are of predictions on the neuron's scale
    "excerpt_ids": pl.List(pl.Int64),  # the scored excerpts, in file order
    "kinds": pl.List(pl.Utf8),  # top | random, per scored excerpt
    "true_activations": pl.List(pl.List(pl.Float32)),
    "expected_activations": pl.List(pl.List(pl.Float32)),  # 0-10; null where none was given
    "explanation_file": pl.Utf8,
}

# The key of one scored explanation sample: what a scores row is the score of.
SCORE_KEYS = (
    "layer",
    "neuron",
    "explainer",
    "explainer_hash",
    "simulator",
    "simulator_hash",
    "sample",
)

SCORES_SCHEMA = {
    **{key: pl.Int32 if key in ("layer", "neuron", "sample") else pl.Utf8 for key in SCORE_KEYS},
    "scored_on": pl.Utf8,  # top | random | top_and_random
    "split": pl.Utf8,  # calibration | valid | test
    "ev_correlation": pl.Float64,
    "rsquared": pl.Float64,
    "absolute_dev_explained": pl.Float64,
    "excerpt_ids": pl.List(pl.Int64),
    "tokens": pl.Int64,  # tokens pooled: the answered positions of the excerpts
    "missing_tokens": pl.Int64,  # positions of the excerpts the simulator did not answer
    # rsquared and absolute_dev_explained are on the neuron's own scale only when the predictions
    # were calibrated to it; on the simulator's 0–10 scale they mean nothing.
    "calibrated": pl.Boolean,
    "undefined_reason": pl.Utf8,  # why ev_correlation is NaN; null when it is defined
}

# The audit of LLM calls (explainer_calls, simulator_calls, revision_calls_rK), before the
# layer, stage and profile columns the assets add.
CALLS_SCHEMA = {
    "call_id": pl.String,
    "request_hash": pl.String,
    "kind": pl.String,
    "model": pl.String,
    "endpoint": pl.String,  # base_url; null is OpenAI
    "prompt_tokens": pl.Int64,
    "completion_tokens": pl.Int64,
    "cost_usd": pl.Float64,  # spent by this call: 0 for cache hits; null when unpriced
    "latency_s": pl.Float64,
    "status": pl.String,  # ok | cached | error
    "attempts": pl.Int32,  # HTTP attempts made; 0 for a cache hit
    "error": pl.String,
    "cached": pl.Boolean,
    "request_json": pl.String,  # the request as sent (canonical JSON; its sha256 is the hash)
    "response_texts": pl.List(pl.String),  # one text per choice; empty for errors
}

COUNTEREXAMPLES_SCHEMA = {
    "layer": pl.Int32,
    "neuron": pl.Int32,
    "explainer": pl.Utf8,  # the profile that wrote the explanation, the texts and the revision
    "explainer_hash": pl.Utf8,
    "simulator": pl.Utf8,  # the profile that predicted `predicted`
    "simulator_hash": pl.Utf8,
    "round": pl.Int32,
    "explanation": pl.Utf8,  # the explanation these counterexamples test
    "source": pl.Utf8,  # generated | mined
    "expected": pl.Utf8,  # activating | non-activating | false_positive | false_negative
    "text": pl.Utf8,
    "tokens": pl.List(pl.Utf8),
    "true_activations": pl.List(pl.Float32),  # raw, from the subject model
    "predicted": pl.List(pl.Float32),  # the simulator's, 0–10
    "miss": pl.Float64,  # max |min(1, relu(true) / train peak) − predicted / 10|
    "truncated": pl.Boolean,  # a generated text cut to the model's context
    "excerpt_id": pl.Int64,  # mined only
    "call_ids": pl.List(pl.Utf8),  # generation call, then simulation calls
    "error": pl.Utf8,  # null when usable
}

# The current explanation per neuron, as revision rounds carry it from round to round.
CURRENT_SCHEMA = {
    "layer": pl.Int32,
    "neuron": pl.Int32,
    "explainer": pl.Utf8,
    "explainer_hash": pl.Utf8,
    "sample": pl.Int32,  # the explanations table's sample this lineage started from
    "simulator": pl.Utf8,
    "simulator_hash": pl.Utf8,
    "round": pl.Int32,  # 0: the explanations table itself
    "explanation": pl.Utf8,
    "calibration_score": pl.Float64,  # ev_correlation, top_and_random, calibration split
    "reported_score": pl.Float64,  # ev_correlation, top_and_random, test split
}

# revised_explanations_rK
REVISIONS_SCHEMA = {
    **CURRENT_SCHEMA,  # explanation, calibration_score, reported_score: what is carried forward
    "previous_explanation": pl.Utf8,
    "revised_explanation": pl.Utf8,  # the candidate; null when none was written
    "kept": pl.Boolean,
    "previous_score": pl.Float64,  # calibration, top_and_random ev_correlation
    "candidate_score": pl.Float64,  # the same, of the candidate
    "previous_reported_score": pl.Float64,  # test, top_and_random ev_correlation
    "counterexamples": pl.Int32,  # how many the revision saw
    "prompt_hash": pl.Utf8,  # null for the baseline
    "call_ids": pl.List(pl.Utf8),  # the revision call, then the candidate's simulations
    "error": pl.Utf8,  # why no candidate was written or scored; null when one was
}

REVISION_SUMMARY_SCHEMA = {
    "layer": pl.Int32,
    "explainer": pl.Utf8,
    "explainer_hash": pl.Utf8,
    "simulator": pl.Utf8,
    "simulator_hash": pl.Utf8,
    "round": pl.Int32,
    "neurons": pl.Int64,
    "kept": pl.Float64,  # share of neurons whose candidate replaced their explanation
    "scored": pl.Int64,
    "mean_score": pl.Float64,  # test, top_and_random, after the round
    "mean_previous_score": pl.Float64,
    "improved": pl.Float64,  # share of scored neurons whose test score rose
    "mean_change": pl.Float64,
    "change_low": pl.Float64,  # bootstrap 95% interval of mean_change
    "change_high": pl.Float64,
}

COMPARISON_SCHEMA = {
    "simulator": pl.Utf8,
    "simulator_hash": pl.Utf8,
    "explainer_a": pl.Utf8,
    "explainer_a_hash": pl.Utf8,
    "explainer_b": pl.Utf8,
    "explainer_b_hash": pl.Utf8,
    "split": pl.Utf8,
    "scored_on": pl.Utf8,
    "shared": pl.UInt32,  # neurons both explainers were scored on
    "compared": pl.UInt32,  # of those, neurons where both scores are defined
    "mean_a": pl.Float64,
    "mean_b": pl.Float64,
    "mean_diff": pl.Float64,  # mean of a − b over the compared neurons
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "wins_a": pl.UInt32,
    "wins_b": pl.UInt32,
    "ties": pl.UInt32,
}

# study/training_data: the study's corpus as training windows of its own tokenizer.
TRAINING_DATA_SCHEMA = {
    "window": pl.Int64,  # index of the window in the token stream
    "split": pl.Utf8,  # train | heldout
    "token_ids": pl.List(pl.Int32),
}

# One point of a study model's loss curve.
LOSS_CURVE_SCHEMA = {
    "step": pl.Int32,
    "tokens": pl.Int64,  # training tokens seen after this step
    "learning_rate": pl.Float64,
    "train_loss": pl.Float64,  # mean over the steps since the previous point
    "heldout_loss": pl.Float64,  # on the first eval_windows held-out windows
}

# study/model_<activation> (one row) and study/training_summary (one row per model).
TRAINED_MODEL_SCHEMA = {
    "model": pl.Utf8,  # the subject model it became
    "activation": pl.Utf8,
    "layers": pl.Int32,
    "mlp_width": pl.Int32,  # neurons per layer
    "parameters": pl.Int64,  # the tied embedding counted once
    "non_embedding_parameters": pl.Int64,
    "mlp_parameters": pl.Int64,
    "steps": pl.Int32,
    "tokens": pl.Int64,
    "heldout_loss": pl.Float64,  # nats per token, on every held-out window
    "unigram_loss": pl.Float64,  # the unigram baseline on the same tokens
    "curve": pl.List(pl.Struct(LOSS_CURVE_SCHEMA)),
}

# comparison/across_models: subject models side by side, per profile pair, model and depth.
MODEL_COMPARISON_SCHEMA = {
    "explainer": pl.Utf8,
    "explainer_hash": pl.Utf8,
    "simulator": pl.Utf8,
    "simulator_hash": pl.Utf8,
    "split": pl.Utf8,
    "scored_on": pl.Utf8,
    "model": pl.Utf8,
    "reference": pl.Utf8,
    "depth": pl.Utf8,  # "all", or a bin of relative depth such as "0.25-0.50"
    "layers": pl.Utf8,  # the model's layers in that bin, e.g. "3" or "8-14"
    "neurons": pl.Int64,  # neurons scored with this profile pair
    "scored": pl.Int64,  # of those, with a defined score
    "undefined_share": pl.Float64,
    "dead_share": pl.Float64,  # never above 0 on the corpus
    "mean": pl.Float64,  # of the defined scores
    "median": pl.Float64,
    "share_ge_0_5": pl.Float64,
    "share_ge_0_8": pl.Float64,
    "floor_mean": pl.Float64,  # mean score of shuffled explanations (the chance floor; test only)
    "diff": pl.Float64,  # mean − the reference's mean at the same depth
    "ci_low": pl.Float64,  # bootstrap 95% interval of diff
    "ci_high": pl.Float64,
}
