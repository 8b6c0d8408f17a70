"""Config overrides for tiny-model runs in tests (shared by conftest fixtures and tests)."""

TINY_VOCAB = 300

TINY_OVERRIDES = [
    "model.name=tiny",
    f"model.vocab_size={TINY_VOCAB}",
    "data.val_size=20",
    "device=cpu",
    "threads=1",
    "finetune.epochs=1",
    "finetune.batch_size=16",
    "finetune.lr=3e-3",
    "finetune.max_len=128",
    "finetune.log_every=5",
    "finetune.save_every=0",
    "verifier.epochs=1",
    "verifier.batch_size=16",
    "verifier.max_len=128",
    "verifier.log_every=5",
    "verifier.save_every=0",
    "sample.n_train=2",
    "sample.n_val=2",
    "sample.n_test=4",
    "sample.max_new_tokens=48",
    "sample.batch_size=32",
    "sample.problems_per_shard=16",
    "score.batch_size=16",
    "evaluate.bootstrap=50",
    "report.html_problems=10",
]
