"""A run's test samples, scores and greedy samples, read and cross-checked into [P, n] arrays (EvalData).

Shared by evaluate (the numbers) and the report (its viewer and score histogram). Shards are read with
gsmv.artifacts.read_shards; every inconsistency between the folders and the test split (an unknown problem id,
a sample index out of range, a duplicate, uneven samples per problem, scores that do not match the samples, a
score that is not a finite number) is a one-line GsmvError naming the folder or shard.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from gsmv.artifacts import RunPaths, Shards, list_shards, read_shard, read_shards, shard_columns
from gsmv.config import RunConfig
from gsmv.errors import GsmvError


@dataclass
class EvalData:
    """One run's test samples aligned into [P, n] arrays (problems in split order, sample_idx order)."""

    problems: list  # list[gsmv.data.gsm8k.Problem]
    n: int
    correct: np.ndarray  # bool [P, n]
    answers: list[list[str | None]]  # normalized final answers [P][n]
    scores: np.ndarray | None  # float [P, n]
    greedy_correct: np.ndarray | None  # bool [P]
    # The tables as read (shard order, the columns asked for) and where each [p, j] sits in them: consumers
    # take only the rows they need (reordering list columns of every row is slow).
    samples: pa.Table
    sample_rows: np.ndarray  # int [P, n]
    score_table: pa.Table | None
    score_rows: np.ndarray | None  # int [P, n]
    greedy: pa.Table | None
    greedy_rows: np.ndarray | None  # int [P]
    # Each table row's shard (and the shards), so that columns not read up front can be read for a few rows.
    sample_shards: tuple[list[Path], np.ndarray] | None = None
    score_shards: tuple[list[Path], np.ndarray] | None = None

    def sample_columns(self, rows: np.ndarray, columns: Sequence[str]) -> pa.Table:
        """`columns` (those the shards have) of the given rows of `samples`, in that order."""
        return _columns_of(self.samples, self.sample_shards, rows, columns)

    def has_sample_column(self, name: str) -> bool:
        """Whether the sample shards have the column (read up front or not)."""
        if name in self.samples.column_names:
            return True
        return self.sample_shards is not None and any(name in shard_columns(p) for p in self.sample_shards[0])

    def score_columns(self, rows: np.ndarray, columns: Sequence[str]) -> pa.Table:
        """`columns` (those the shards have) of the given rows of `score_table`, in that order."""
        return _columns_of(self.score_table, self.score_shards, rows, columns)


def _columns_of(table: pa.Table | None, shards: tuple[list[Path], np.ndarray] | None, rows: np.ndarray,
                columns: Sequence[str]) -> pa.Table:
    rows = np.asarray(rows, dtype=np.int64)
    if table is not None and (shards is None or all(c in table.column_names for c in columns)):
        return table.take(rows).select([c for c in columns if c in table.column_names])
    if shards is None:
        raise GsmvError("no table to read columns from")
    return read_rows(*shards, rows, columns)


def read_rows(shards: list[Path], shard_of: np.ndarray, rows: np.ndarray, columns: Sequence[str]) -> pa.Table:
    """`columns` of some rows of a folder read by gsmv.artifacts.read_shards (row numbers in its concatenated
    table, in the order given), reading only the shards that hold them: list columns such as text, tokens and
    per-token values of every sample need gigabytes at N in the thousands, and a report shows a few hundred
    problems."""
    rows = np.asarray(rows, dtype=np.int64)
    first = np.concatenate([[0], np.cumsum(np.bincount(shard_of, minlength=len(shards)))])
    which = shard_of[rows] if len(rows) else np.zeros(0, dtype=np.int64)
    parts, where = [], []
    for s in np.unique(which):
        sel = np.flatnonzero(which == s)
        parts.append(read_shard(shards[int(s)], (), columns).take(rows[sel] - first[s]))
        where.append(sel)
    if not parts:
        return pa.table({})
    table = pa.concat_tables(parts, promote_options="default")
    return table.take(np.argsort(np.concatenate(where), kind="stable"))


def _problem_of(shards: Shards, index: dict[str, int], pids: list) -> np.ndarray:
    p_of = np.empty(len(pids), dtype=np.int64)
    for r, pid in enumerate(pids):
        p = index.get(pid)  # type: ignore[arg-type]
        if p is None:
            raise GsmvError(f"{shards.paths[shards.shard_of[r]]}: problem_id '{pid}' is not in the test split "
                            f"({len(index)} problems; was it sampled with another data.dir or data.test_limit?)")
        p_of[r] = p
    return p_of


def _positions(shards: Shards, folder: Path, index: dict[str, int], n: int | None, what: str) -> tuple[np.ndarray,
                                                                                                      int]:
    """Row → p*n + sample_idx, validating ids, sample indices, duplicates and per-problem counts."""
    table = shards.table
    if table.num_rows == 0:
        raise GsmvError(f"{folder}: the shards hold no rows")
    pids = table.column("problem_id").to_pylist()
    sidx = np.asarray(table.column("sample_idx").fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
    p_of = _problem_of(shards, index, pids)
    P = len(index)
    per = np.bincount(p_of, minlength=P)
    if n is None:
        n = int(per.max()) if P else 0
    if (sidx < 0).any() or (sidx >= max(n, 1)).any():
        r = int(np.flatnonzero((sidx < 0) | (sidx >= n))[0])
        raise GsmvError(f"{shards.paths[shards.shard_of[r]]}: problem {pids[r]} has sample_idx {sidx[r]}, "
                        f"outside 0..{n - 1}")
    pos = p_of * n + sidx
    uniq, first, cnt = np.unique(pos, return_index=True, return_counts=True)
    if (cnt > 1).any():
        r = int(first[np.flatnonzero(cnt > 1)[0]])
        raise GsmvError(f"{folder}: problem {pids[r]} sample {sidx[r]} appears more than once")
    bad = np.flatnonzero(per != n)
    if bad.size:
        pid = next(k for k, v in index.items() if v == bad[0])
        raise GsmvError(f"{folder}: problem {pid} has {per[bad[0]]} {what}, expected {n} like the others "
                        f"({bad.size} of {P} problems differ)")
    return pos, n


def _graded(ok: list, answers: list[str | None], reference: Callable[[int], str]) -> np.ndarray:
    """The stored labels; ungraded (null) rows graded here against row i's reference(i), like the label stage."""
    if any(v is None for v in ok):
        ok = [v if v is not None else (a is not None and a == reference(i))
              for i, (v, a) in enumerate(zip(ok, answers, strict=True))]
    return np.asarray(ok, dtype=bool)


def _read_samples(folder: Path, problems: list, index: dict[str, int],
                  columns: Sequence[str]) -> tuple[Shards, np.ndarray, int, np.ndarray, list]:
    """samples/test: (shards, row order by [p, j], n, correct [P, n], normalized answers [P][n])."""
    from gsmv.data.answers import normalize_answer

    base = ["problem_id", "sample_idx", "final_answer", "is_correct"]
    shards = read_shards(folder, base, [c for c in ("finished", "n_tokens", *columns) if c not in base])
    pos, n = _positions(shards, folder, index, None, "samples")
    order = np.argsort(pos)
    raw = shards.table.column("final_answer").to_pylist()
    # Each distinct answer normalized once: N samples of a problem repeat a few answers (runs/synth's test
    # samples: 50,000 answers, 833 distinct).
    norm = {a: normalize_answer(a) for a in set(raw) if a is not None}
    flat_answers = [norm.get(raw[r]) for r in order]
    ok_raw = shards.table.column("is_correct").to_pylist()
    P = len(problems)
    correct = _graded([ok_raw[r] for r in order], flat_answers, lambda i: problems[i // n].answer).reshape(P, n)
    answers = [flat_answers[p * n:(p + 1) * n] for p in range(P)]
    return shards, order, n, correct, answers


def _read_scores(folder: Path, samples: Path, n_samples: int, problems: list, index: dict[str, int], n: int,
                 columns: Sequence[str]) -> tuple[Shards, np.ndarray, np.ndarray]:
    """scores/test, one per sample: (shards, row of each [p, j], scores [P, n])."""
    if not list_shards(folder):
        raise GsmvError(f"{folder}: no shard-*.parquet files (run `gsmv score` first)")
    shards = read_shards(folder, ["problem_id", "sample_idx", "score"], list(columns))
    if shards.table.num_rows != n_samples:
        raise GsmvError(f"{folder}: {shards.table.num_rows} scores for {n_samples} samples in {samples} "
                        "(rerun `gsmv score`)")
    pos, _ = _positions(shards, folder, index, n, "scores")
    rows = np.argsort(pos).reshape(len(problems), n)
    scores = np.asarray(shards.table.column("score").fill_null(np.nan).to_numpy(zero_copy_only=False),
                        dtype=np.float64)[rows]
    if not np.isfinite(scores).all():
        bad = int(np.flatnonzero(~np.isfinite(scores.ravel()))[0])
        raise GsmvError(f"{folder}: score of problem {problems[bad // n].id} sample {bad % n} is "
                        f"{scores.ravel()[bad]} (not a finite number)")
    return shards, rows, scores


def _read_greedy(folder: Path, problems: list, index: dict[str, int],
                 columns: Sequence[str]) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """samples/test_greedy, one per problem: (table, row of each problem, correct [P])."""
    from gsmv.data.answers import normalize_answer

    shards = read_shards(folder, ["problem_id", "sample_idx", "final_answer", "is_correct"], list(columns))
    pos, _ = _positions(shards, folder, index, 1, "greedy samples")
    rows = np.argsort(pos)
    raw = shards.table.column("final_answer").to_pylist()
    answers = [normalize_answer(raw[r]) if raw[r] is not None else None for r in rows]
    ok = shards.table.column("is_correct").to_pylist()
    return shards.table, rows, _graded([ok[r] for r in rows], answers, lambda i: problems[i].answer)


def load_run(cfg: RunConfig, sample_columns: Sequence[str] = (), score_columns: Sequence[str] = (),
             greedy_columns: Sequence[str] = (), need_scores: bool = True) -> EvalData:
    """Read and cross-check samples/test, scores/test and samples/test_greedy of cfg's run folder."""
    from gsmv.data.tasks import load_split

    paths = RunPaths(cfg.run_dir)
    problems = load_split(cfg, "test")
    index = {p.id: i for i, p in enumerate(problems)}
    P = len(problems)
    if P == 0:
        raise GsmvError(f"{cfg.run_dir}: the test split is empty")
    folder = paths.samples("test")
    samples, order, n, correct, answers = _read_samples(folder, problems, index, sample_columns)

    scores = score_table = score_rows = score_shards = None
    sfolder = paths.scores("test")
    if need_scores or list_shards(sfolder):
        s, score_rows, scores = _read_scores(sfolder, folder, samples.table.num_rows, problems, index, n,
                                             score_columns)
        score_table, score_shards = s.table, (s.paths, s.shard_of)

    greedy = greedy_correct = greedy_rows = None
    gfolder = paths.samples("test_greedy")
    if list_shards(gfolder):
        greedy, greedy_rows, greedy_correct = _read_greedy(gfolder, problems, index, greedy_columns)

    return EvalData(problems=problems, n=n, correct=correct, answers=answers, scores=scores,
                    greedy_correct=greedy_correct, samples=samples.table, sample_rows=order.reshape(P, n),
                    score_table=score_table, score_rows=score_rows, greedy=greedy, greedy_rows=greedy_rows,
                    sample_shards=(samples.paths, samples.shard_of), score_shards=score_shards)


def first_samples(run: str | Path, split: str, n_problems: int, columns: Sequence[str]) -> tuple[dict, list[dict]]:
    """A run's problems of `split` by id, and the sample rows (`columns`) of the first n_problems problems of
    samples/<split>, in shard order (the benchmarks' and research probes' way to take a slice of a run)."""
    from gsmv.config import load_config
    from gsmv.data.tasks import load_split

    paths = RunPaths(run)
    problems = {p.id: p for p in load_split(load_config(paths.config), split)}
    rows = read_shards(paths.samples(split), list(columns)).table.to_pylist()
    keep = set(list(dict.fromkeys(r["problem_id"] for r in rows))[:n_problems])
    return problems, [r for r in rows if r["problem_id"] in keep]
