"""Is a question like the problems a run was trained on? `gsmv solve` flags those that are not.

A run's models answer any text with the same confidence: on the default run (a 1M-parameter model trained
from scratch on the synthetic task) "What is the capital of France?" got a number at verifier value 0.93. The
verifier's value is only meaningful on problems like its training data, and nothing in the models says when a
question is not.

The signal: the share of the question's words (letters only: numbers are every problem's own) that never
appear in the run's train questions. It is flagged when the share is above the largest share among the run's
val questions, which are held out of training but drawn like it, so about one in len(val) in-domain questions
is flagged. Measured on the synth preset's data (20,000 train questions, a 189-word vocabulary; val and test:
0% unseen words, every question), ten everyday questions had 18-75% of their words unseen, a numbers-only
question 0%. On GSM8K (a 10,964-word vocabulary; val at most 29%) the same ten everyday questions have no
unseen word at all: there the check only catches unusual wording, not unusual subjects.

Cheaper and more general than the generator's likelihood of the question: gsmv trains on solution tokens only
(finetune.loss_on_prompt=false), so a from-scratch generator never learned the questions' distribution, and
it works with every sampler backend (no model call).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from gsmv.config import RunConfig

_WORD = re.compile(r"[^\W\d_]+")  # runs of letters, any alphabet


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class Check:
    unseen_share: float  # of the question's words, those never in a train question
    unseen_words: list[str]  # each once, in question order
    unlike_training: bool  # unseen_share above the val questions' largest


@dataclass(frozen=True)
class Familiarity:
    vocabulary: frozenset[str]  # every word of the train questions
    threshold: float  # the largest unseen share among the val questions (0: any unseen word is flagged)
    train_questions: int
    val_questions: int
    task: str  # what the run was trained on, for the user ("synthetic (data.synth)", a GSM8K folder ...)

    def check(self, question: str) -> Check:
        ws = words(question)
        new = [w for w in ws if w not in self.vocabulary]
        share = len(new) / len(ws) if ws else 0.0
        return Check(unseen_share=round(share, 4), unseen_words=list(dict.fromkeys(new)),
                     unlike_training=share > self.threshold)

    @classmethod
    def of(cls, train: list[str], val: list[str], task: str) -> Familiarity:
        vocab: set[str] = set()
        for q in train:
            vocab.update(words(q))
        shares = [sum(w not in vocab for w in ws) / len(ws) for ws in map(words, val) if ws]
        return cls(frozenset(vocab), max(shares, default=0.0), len(train), len(val), task)

    @classmethod
    def of_run(cls, run_dir: Path, cfg: RunConfig) -> Familiarity | None:
        """From the problems the run keeps in run_dir/data (split as the run split them); None for a run folder
        without them (made before gsmv kept its data)."""
        from gsmv.artifacts import read_json_or_none
        from gsmv.data.tasks import load_split

        data = Path(run_dir) / "data"
        if not (data / "train.jsonl").is_file():
            return None
        local = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, source="local", dir=str(data)))
        info = read_json_or_none(data / "info.json")
        task = info.get("source", "?") if isinstance(info, dict) else "?"
        return cls.of([p.question for p in load_split(local, "train")],
                      [p.question for p in load_split(local, "val")], task)
