"""Write a tiny, synthetic GSM8K-format dataset (templated one- and two-step problems).

Not GSM8K text: every problem is generated here, so tests and the smoke preset
need no copy of the real data. Run from the repo root to regenerate:
    python tests/assets/make_tiny_gsm8k.py
"""

import json
import random
from pathlib import Path

NAMES = ["Tom", "Ana", "Lee", "Mia", "Sam", "Eva", "Raj", "Zoe"]
ITEMS = ["apples", "pens", "books", "coins", "stamps", "cards"]


def problem(rng: random.Random) -> dict:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b, c = rng.randint(2, 20), rng.randint(2, 20), rng.randint(2, 5)
    kind = rng.randrange(3)
    if kind == 0:
        q = f"{name} has {a} {item} and buys {b} more. How many {item} does {name} have?"
        s = f"{name} has {a}+{b} = <<{a}+{b}={a + b}>>{a + b} {item}.\n#### {a + b}"
    elif kind == 1:
        q = f"{name} has {c} boxes with {a} {item} in each. How many {item} are there?"
        s = f"There are {c}*{a} = <<{c}*{a}={c * a}>>{c * a} {item}.\n#### {c * a}"
    else:
        q = f"{name} has {a} {item}, buys {b} more and then gives away {c}. How many {item} are left?"
        s = (f"After buying, {name} has {a}+{b} = <<{a}+{b}={a + b}>>{a + b} {item}.\n"
             f"{name} has {a + b}-{c} = <<{a + b}-{c}={a + b - c}>>{a + b - c} {item} left.\n#### {a + b - c}")
    return {"question": q, "answer": s}


def main() -> None:
    out = Path(__file__).parent / "tiny_gsm8k"
    out.mkdir(exist_ok=True)
    rng = random.Random(0)
    for split, n in (("train", 240), ("test", 40)):
        with open(out / f"{split}.jsonl", "w") as f:
            for _ in range(n):
                f.write(json.dumps(problem(rng)) + "\n")


if __name__ == "__main__":
    main()
