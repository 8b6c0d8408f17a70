"""Helpers shared by the research scripts (run from the repository root: python docs/research/scripts/X.py, so
this folder is on sys.path). benchmarks/bench_common.py keeps its own copy of `first_samples` for
bench_score.py: the speed benchmarks and the research scripts do not import across folders."""

from __future__ import annotations


def first_samples(run: str, split: str, n_problems: int, columns: list[str]) -> tuple[dict, list[dict]]:
    """A run's problems of `split` by id, and the sample rows (`columns`) of the first n_problems problems of
    samples/<split>, in shard order."""
    from gsmv.artifacts import RunPaths, read_shards
    from gsmv.config import load_config
    from gsmv.data.tasks import load_split

    paths = RunPaths(run)
    problems = {p.id: p for p in load_split(load_config(paths.config), split)}
    rows = read_shards(paths.samples(split), columns).table.to_pylist()
    keep = set(list(dict.fromkeys(r["problem_id"] for r in rows))[:n_problems])
    return problems, [r for r in rows if r["problem_id"] in keep]
