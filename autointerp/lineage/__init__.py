"""Lineage: the chain behind a score as data (`chain`), read back from the Delta tables at the
versions the score recorded (`read`), rendered for a terminal or as JSON (`render`), and the ids
that name explanations and simulations in every table (`ids`)."""
