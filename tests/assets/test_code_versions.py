"""Code versions hash what changes results, so that Dagster marks exactly that unsynced."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from assets import model_assets
from autointerp.config.settings import Settings


def versions(settings: Settings, **model_changes) -> dict[str, str]:
    model = replace(settings.model("tiny"), **model_changes)
    return {
        key.path[-1]: spec.code_version
        for asset in model_assets(settings, model)
        for key, spec in asset.specs_by_key.items()
    }


def test_batch_size_and_device_change_no_result(tiny_settings):
    base = versions(tiny_settings)
    assert versions(tiny_settings, batch_size=2, device="auto") == base


def test_the_dtype_and_the_weights_change_the_records_not_the_corpus(tiny_settings, tmp_path):
    base = versions(tiny_settings)
    half = versions(tiny_settings, dtype="bfloat16")
    assert half["neuron_records"] != base["neuron_records"]
    assert half["corpus"] == base["corpus"]  # the tokenizer is the same
    folder = Path(tiny_settings.model("tiny").path)
    weights = next(folder.glob("*.safetensors"))
    copy = tmp_path / "copy"
    copy.mkdir()
    for file in weights.parent.iterdir():
        data = file.read_bytes()
        if file == weights:  # one byte of the weights changed
            data = data[:-1] + bytes([data[-1] ^ 1])
        (copy / file.name).write_bytes(data)
    moved = versions(tiny_settings, path=str(copy))
    assert moved["neuron_records"] != base["neuron_records"]
