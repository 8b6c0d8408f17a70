"""Models: tokenizers, causal-LM loading and presets, the verifier."""
