"""Activation capture on tiny models of every supported architecture, against direct hooks."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from autointerp.activations import capture
from autointerp.activations.capture import capture_records
from autointerp.activations.residuals import Handoff
from autointerp.activations.subject_model import load_subject_model
from autointerp.config.settings import RecordsSpec
from autointerp.errors import InputError
from autointerp.testing.tiny_models import (
    ARCHITECTURES,
    SPECIAL_TOKENS,
    make_tiny_model,
    tiny_spec,
)

SPEC = RecordsSpec(top_k=5, random_k=3, quantile_k=2, boundary_pool=8)


def corpus_frame(n: int, length: int, vocab: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, size=(n, length))
    return pl.DataFrame(
        {
            "excerpt_id": pl.Series(np.arange(n), dtype=pl.Int64),
            "token_ids": pl.Series(ids.tolist(), dtype=pl.List(pl.Int32)),
        }
    )


def all_activations(subject, tokens: np.ndarray, layer: int) -> np.ndarray:
    """Every excerpt's activations at `layer`, by a plain full forward pass over the excerpts
    wrapped in the tokenizer's own special tokens, read back at the excerpts' positions."""
    prefix, suffix = subject.special_prefix, subject.special_suffix
    wrapped = np.array([[*prefix, *row, *suffix] for row in tokens.tolist()])
    seen = []
    handle = subject.neuron_module(layer).register_forward_pre_hook(
        lambda _m, inputs: seen.append(inputs[0].detach().float())
    )
    with torch.inference_mode():
        subject.model(input_ids=torch.from_numpy(wrapped), attention_mask=torch.ones(wrapped.shape))
    handle.remove()
    return seen[0].numpy()[:, len(prefix) : wrapped.shape[1] - len(suffix)]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_top_k_matches_a_direct_forward_pass(tmp_path, architecture):
    path = make_tiny_model(tmp_path, architecture, num_layers=2)
    subject = load_subject_model(
        tiny_spec(path), cache_dir=tmp_path / "c", downloads=tmp_path / "d", allow_hub=False
    )
    # Each architecture gets the special tokens its tokenizer adds (Gemma's BOS, BERT's [CLS]
    # and [SEP]); those positions are in no record.
    before, after = SPECIAL_TOKENS.get(architecture, (None, None))
    tokenizer = subject.tokenizer
    assert subject.special_prefix == tuple(
        tokenizer.convert_tokens_to_ids([before] if before else [])
    )
    assert subject.special_suffix == tuple(
        tokenizer.convert_tokens_to_ids([after] if after else [])
    )
    corpus = corpus_frame(24, 12, len(subject.tokenizer))
    frame = capture_records(subject, corpus, [0, 1], SPEC)
    assert frame["top_activations"].list.eval(
        pl.element().list.len()
    ).explode().unique().to_list() == [12]
    tokens = np.asarray(corpus["token_ids"].to_list())
    assert frame["layer"].unique().sort().to_list() == [0, 1]
    for layer in (0, 1):
        acts = all_activations(subject, tokens, layer)  # [excerpts, tokens, neurons]
        records = frame.filter(layer=layer).sort("neuron")
        assert records.height == subject.neurons_per_layer == acts.shape[2]
        maxes = acts.max(axis=1)
        for row in records.head(4).iter_rows(named=True):
            n = row["neuron"]
            expected = np.argsort(-maxes[:, n], kind="stable")[: SPEC.top_k]
            np.testing.assert_allclose(row["top_max_activations"], maxes[expected, n], rtol=1e-5)
            got = np.array(row["top_activations"])
            np.testing.assert_allclose(got, acts[row["top_excerpt_ids"], :, n], atol=1e-5)
            np.testing.assert_allclose(row["mean"], acts[:, :, n].mean(), rtol=1e-3, atol=1e-6)


def test_pass_stops_after_the_deepest_requested_layer(tmp_path, tiny_model_dir):
    subject = load_subject_model(
        tiny_spec(tiny_model_dir), cache_dir=tmp_path, downloads=tmp_path, allow_hub=False
    )
    calls = []
    handle = subject.neuron_module(1).register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        capture_records(subject, corpus_frame(16, 8, len(subject.tokenizer)), [0], SPEC)
    finally:
        handle.remove()
    assert calls == []


def test_capture_refuses_bad_requests(tmp_path, tiny_model_dir):
    subject = load_subject_model(
        tiny_spec(tiny_model_dir), cache_dir=tmp_path, downloads=tmp_path, allow_hub=False
    )
    vocab = len(subject.tokenizer)
    with pytest.raises(InputError, match="out of range"):
        capture_records(subject, corpus_frame(16, 8, vocab), [2], SPEC)
    with pytest.raises(InputError, match="exceed the model's context"):
        capture_records(subject, corpus_frame(16, 65, vocab), [0], SPEC)
    with pytest.raises(InputError, match="fewer than top_k"):
        capture_records(subject, corpus_frame(3, 8, vocab), [0], SPEC)
    with pytest.raises(InputError, match="no excerpts"):
        capture_records(subject, corpus_frame(0, 8, vocab), [0], SPEC)


def test_no_neuron_is_scored_on_an_excerpt_it_was_explained_with(tmp_path, tiny_model_dir):
    """The real capture, records and splits, for every neuron: its random excerpts come from
    outside its top-k, no excerpt is in two of its splits, none twice in one scored set."""
    from autointerp.activations.splits import split_records

    subject = load_subject_model(
        tiny_spec(tiny_model_dir), cache_dir=tmp_path, downloads=tmp_path, allow_hub=False
    )
    corpus = corpus_frame(80, 10, len(subject.tokenizer))
    spec = RecordsSpec(top_k=8, random_k=6, reference_k=4, quantile_k=2, boundary_pool=16)
    splits = split_records(capture_records(subject, corpus, [0, 1], spec))
    per_neuron = splits.group_by("layer", "neuron").agg(
        rows=pl.len(), distinct=pl.col("excerpt_id").n_unique()
    )
    assert per_neuron.height == 2 * subject.neurons_per_layer
    assert (per_neuron["rows"] == per_neuron["distinct"]).all()
    scored = splits.filter(pl.col("split") != "train").group_by("layer", "neuron", "split")
    assert (scored.agg(pl.col("excerpt_id").is_duplicated().any())["excerpt_id"] == False).all()  # noqa: E712


def test_capture_holds_a_few_layers_of_one_batch_whatever_the_layers(tmp_path, monkeypatch):
    """Memory flat in the layers: the activations handed to the records' updates and not yet
    consumed never exceed IN_FLIGHT layers of one batch (+1 for the one the model just handed
    over), however many layers the pass serves; the old design held every layer of two
    batches."""
    path = make_tiny_model(tmp_path, "llama", num_layers=6)
    subject = load_subject_model(
        tiny_spec(path, num_layers=6),
        cache_dir=tmp_path / "c",
        downloads=tmp_path / "d",
        allow_hub=False,
    )
    held: list[int] = []
    peak = [0]

    class Counting(capture.ThreadPoolExecutor):
        def submit(self, fn, *args, **kwargs):
            size = sum(a.numel() for a in args if isinstance(a, torch.Tensor))
            held.append(size)
            peak[0] = max(peak[0], sum(held))
            future = super().submit(fn, *args, **kwargs)
            future.add_done_callback(lambda _: held.remove(size))
            return future

    monkeypatch.setattr(capture, "ThreadPoolExecutor", Counting)
    batch, length = subject.spec.batch_size, 8
    corpus = corpus_frame(4 * batch, length, len(subject.tokenizer))
    records = capture_records(subject, corpus, list(range(6)), SPEC)
    assert records.height == 6 * subject.neurons_per_layer
    one_layer = batch * length * subject.neurons_per_layer
    assert 0 < peak[0] <= (capture.IN_FLIGHT + 1) * one_layer < 6 * one_layer


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_a_pass_from_the_residual_stream_a_pass_below_left_gives_the_same_records(
    tmp_path, architecture
):
    """Capture in two runs: the first leaves the hidden states after its deepest layer, the
    second starts there on a model without the blocks below. The same records as one pass."""
    path = make_tiny_model(tmp_path, architecture, num_layers=3)
    spec = tiny_spec(
        path, num_layers=3, batch_size=5
    )  # 24 excerpts: batches of 5 and a last one of 4

    def load(from_layer: int = 0):
        return load_subject_model(
            spec,
            cache_dir=tmp_path / "c",
            downloads=tmp_path / "d",
            allow_hub=False,
            from_layer=from_layer,
        )

    full = load()
    corpus = corpus_frame(24, 12, len(full.tokenizer))
    handoff = Handoff(tmp_path / "residuals", {"model": architecture}, range_end=2)
    first_run = handoff.streams([0])
    assert first_run[0] is None and first_run[1] == handoff.stream(1)
    below = capture_records(full, corpus, [0], SPEC, leaving=first_run[1])
    entering, leaving = handoff.streams([1, 2])
    assert entering == handoff.stream(1) and entering.exists() and leaving is None

    # A pass that fails leaves the stream for its rerun.
    run = capture.ActivationHooks.run
    calls = []

    def failing(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the pass died")
        return run(self, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(capture.ActivationHooks, "run", failing)
        with pytest.raises(RuntimeError, match="died"):
            capture_records(load(from_layer=1), corpus, [1, 2], SPEC, entering=entering)
    assert entering.exists()

    upper = load(from_layer=1)
    assert sum(p.numel() for p in upper.model.parameters()) < sum(
        p.numel() for p in full.model.parameters()
    )
    with pytest.raises(InputError, match="valid layers are 1 to 2"):
        upper.check_layers([0])
    resumed = capture_records(upper, corpus, [1, 2], SPEC, entering=entering)
    assert not entering.exists()  # read through
    assert resumed.equals(capture_records(full, corpus, [1, 2], SPEC))
    assert below.equals(capture_records(full, corpus, [0], SPEC))


def test_a_residual_stream_of_another_pass_is_refused_and_removed(tmp_path, tiny_model_dir):
    spec = tiny_spec(tiny_model_dir)
    subject = load_subject_model(spec, cache_dir=tmp_path, downloads=tmp_path, allow_hub=False)
    stream = Handoff(tmp_path / "residuals", "a pass", range_end=1).stream(1)
    capture_records(subject, corpus_frame(16, 8, len(subject.tokenizer)), [0], SPEC, leaving=stream)
    with pytest.raises(InputError, match="run the capture again"):
        capture_records(
            subject, corpus_frame(20, 8, len(subject.tokenizer)), [1], SPEC, entering=stream
        )
    assert not stream.exists()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_residual_stream_reads_back_what_was_written(tmp_path, dtype):
    stream = Handoff(tmp_path, "a pass", range_end=1).stream(1)
    batches = [torch.randn(n, 7, 3).to(dtype) for n in (4, 4, 2)]
    with stream.writer() as write:
        for batch in batches:
            write(batch)
        assert not stream.exists()  # only once the pass is complete
    with stream.reader(dtype, (7, 3)) as read:
        for batch in batches:
            assert torch.equal(read(len(batch)), batch)
    with pytest.raises(RuntimeError), stream.writer() as write:
        write(batches[0])
        raise RuntimeError("the pass failed")
    assert stream.exists() and list(tmp_path.iterdir()) == [stream.path]  # the last whole one
