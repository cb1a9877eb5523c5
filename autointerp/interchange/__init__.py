"""Open datasets in and out: OpenAI's published neuron format, and a shareable dataset.

- `layout`: where the published layout keeps each file
  (`collated-activations/{layer}/{neuron}.json`, `explanations/{layer}/{neuron}.jsonl`), reading
  a folder or a URL, writing a folder whole.
- `published`: the format's objects (NeuronRecord, NeuronSimulationResults and what they nest),
  written with their `dataclass_name` and read back with every field checked.
- `importing`: a layer of a published dataset as this project's frames (corpus, neuron_records and
  imported_explanations), with no forward pass.
- `imported`: the rows the explain, simulate and score stages write for an imported profile.
- `exporting`: this project's records, explanations and scored simulations in that layout.
- `dataset`: the tables as Parquet with a dataset card.
"""
