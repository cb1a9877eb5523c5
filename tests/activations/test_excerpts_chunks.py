"""Records become excerpts a chunk of neurons at a time, with the same rows as all at once."""

import polars as pl
import pytest

from autointerp.activations.excerpts import excerpts_of_records, neuron_excerpts
from autointerp.activations.splits import split_records
from autointerp.config.settings import RecordsSpec
from autointerp.errors import InputError
from autointerp.testing.layers import synthetic_records


@pytest.fixture
def layers():
    spec = RecordsSpec(top_k=8, random_k=6, reference_k=2, quantile_k=1)
    return synthetic_records([2, 0], 11, spec)


def test_chunks_of_neurons_give_the_rows_of_one_piece(layers):
    corpus, records = layers
    whole = neuron_excerpts(split_records(records.sort("layer", "neuron")), corpus)
    shuffled = records.sample(fraction=1.0, shuffle=True, seed=3)  # any row order in
    for chunk in (1, 4, 11, 1000):
        assert excerpts_of_records(shuffled, corpus, chunk).equals(whole)


def test_records_of_another_corpus_are_refused(layers):
    corpus, records = layers
    other = records.with_columns(corpus_id=pl.lit("corpus-other"))
    with pytest.raises(InputError, match="captured over"):
        excerpts_of_records(other, corpus.with_columns(corpus_id=pl.lit("corpus-this")), 4)
