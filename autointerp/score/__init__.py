"""Scoring: the formulas (`metrics`), calibration, the score stage (`scores`), which sample
counts (`selection`), the per-layer summary, explainer comparisons, and one bootstrap."""
