"""The ids that name one explanation and one simulation in every table that refers to them."""

from __future__ import annotations

import polars as pl


def explanation_id() -> pl.Expr:
    """`layer/neuron/explainer@hash/sample`: names one explanation in every table."""
    return pl.format("{}/{}/{}@{}/{}", "layer", "neuron", "explainer", "explainer_hash", "sample")


def simulation_id() -> pl.Expr:
    """`<explanation id>/simulator@hash`: names one explanation's simulation by one simulator."""
    return pl.format("{}/{}@{}", explanation_id(), "simulator", "simulator_hash")
