"""Simulating: the simulator prompts, the parsers of their replies, the offline lexical baseline,
and the simulate stage."""
