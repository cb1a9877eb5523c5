"""Explaining: the prompt format every prompt shares, few-shot sets, the explainer prompt, the
offline token-statistics baseline, and the explain stage."""
