"""Test doubles for code built on autointerp: a scripted OpenAI-compatible server
(`llm_server`) and tiny randomly initialised subject models of every supported architecture
(`tiny_models`). The project's tests and benchmarks use them; nothing in the pipeline does."""
