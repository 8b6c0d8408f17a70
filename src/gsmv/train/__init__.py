"""Training: the shared loop, generator fine-tuning, verifier training."""
