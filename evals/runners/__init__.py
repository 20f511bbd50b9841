"""One runner per system under test. Each turns prompt token ids into a
Generation (token ids + per-token timestamps) at batch 1, greedy, for a fixed
number of tokens; see evals/runners/generation.py for the contract."""
