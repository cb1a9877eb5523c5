"""Activations: the subject model, the corpus, one streaming capture pass into neuron records,
the reference splits, and probing arbitrary texts."""
