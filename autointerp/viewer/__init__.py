"""The neuron viewer: every neuron, the evidence behind its explanation, and its scores, read-only
over the Delta tables. Data queries return dataclasses and frames (`tables`: version-cached reads;
`overview`, `layer`, `neuron`, `revisions`, `search`: the pages' data); the web layer renders them
(`pages`: Jinja2 templates and Altair charts; `heatmap`, `text`: escaped token and text markup;
`web`: the Starlette server; `export`: a static copy). `autointerp view` starts it."""
