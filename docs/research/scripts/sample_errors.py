"""Where the generator's wrong samples go wrong, on a synth run's train samples: for the distinct wrong samples
of problems that also have a right one, the number of the first wrong step (a step is wrong when its result is
not one of the reference's intermediate values, gsmv.data.tasks) and how far into the sample it departs from
the closest right sample of its problem (longest common prefix, as a share of its characters).

    python docs/research/scripts/sample_errors.py --run runs/synth-v100
"""

from __future__ import annotations

import argparse
import collections
import os

from gsmv.artifacts import RunPaths, read_shards
from gsmv.config import load_config
from gsmv.data.calculator import find_annotations
from gsmv.data.tasks import load_split, reference_values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/synth")
    ap.add_argument("--split", default="train")
    a = ap.parse_args()
    paths = RunPaths(a.run)
    cfg = load_config(paths.config)
    problems = {p.id: p for p in load_split(cfg, "train" if a.split == "train" else a.split)}
    t = read_shards(paths.samples(a.split), ["problem_id", "text", "is_correct"]).table.to_pydict()
    by: dict[str, dict[str, bool]] = collections.defaultdict(dict)
    for pid, text, ok in zip(t["problem_id"], t["text"], t["is_correct"], strict=True):
        by[pid][text] = bool(ok)
    first, depart = collections.Counter(), collections.Counter()
    for pid, samples in by.items():
        rights = [s for s, ok in samples.items() if ok]
        if not rights or all(samples.values()):
            continue
        values = reference_values(problems[pid])
        for s, ok in samples.items():
            if ok:
                continue
            k = next((i for i, x in enumerate(find_annotations(s)) if x.result.strip() not in values), None)
            first["none" if k is None else str(min(k + 1, 4))] += 1
            lcp = max(len(os.path.commonprefix([s, r])) for r in rights)
            depart[min(int(10 * lcp / max(len(s), 1)), 9)] += 1
    n = sum(first.values())
    print(f"{n} distinct wrong samples of problems with a right one")
    print("first wrong step (4 = 4th or later; none = every step right, answer wrong):",
          {k: f"{100 * v / n:.1f}%" for k, v in sorted(first.items())})
    print("departs from the closest right sample within the first ... of its characters:",
          {f"{10 * (k + 1)}%": f"{100 * v / n:.1f}%" for k, v in sorted(depart.items())})


if __name__ == "__main__":
    main()
