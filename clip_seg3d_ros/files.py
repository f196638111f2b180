"""Outputs that appear whole or not at all, and OS errors said in one line.

A tool that writes a bag, a metrics file or a model writes it beside its target and moves it into place only
when everything succeeded (:func:`atomic_outputs`). On an error, Ctrl-C or SIGTERM (:func:`signals_interrupt`)
nothing partial is left, not even the parent folders the run created, so the next run is never blocked by the
remains of the last one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path

STAGING_PREFIX = ".partial-"


@contextlib.contextmanager
def atomic_outputs(targets: Sequence[str | Path | None]) -> Iterator[list[Path | None]]:
    """Staging paths for ``targets`` (files or folders, None for "not wanted"), moved onto them on success.

    Each target gets a path with its own name inside a staging folder beside it (``.partial-<pid>-<name>``), so
    that a tool naming its files after their folder (rosbags does) names them right. A target folder that exists
    is refused (FileExistsError) before anything is written; an existing file is replaced, but only on success.
    Targets move in order when the block completes;
    on any exception, KeyboardInterrupt included, the staging folders and the parents this call created are
    removed and the exception goes on.
    """
    wanted = [Path(target) for target in targets if target is not None]
    for target in wanted:
        if target.is_dir():
            raise FileExistsError(errno.EEXIST, "exists already (choose another path or remove it)", str(target))
    created: list[Path] = []
    staging: dict[Path, Path] = {}
    try:
        for target in wanted:
            created += make_parents(target.parent)
            folder = target.parent / f"{STAGING_PREFIX}{os.getpid()}-{target.name}"
            folder.mkdir()
            staging[target] = folder
        yield [None if target is None else staging[Path(target)] / Path(target).name for target in targets]
        for target, folder in staging.items():
            (folder / target.name).replace(target)
    except BaseException:
        for target in wanted:  # a target moved before a later one failed goes too: all or nothing
            if target in staging and not (staging[target] / target.name).exists() and target.exists():
                remove(target)
        for parent in reversed(created):
            shutil.rmtree(parent, ignore_errors=True)
        raise
    finally:
        for folder in staging.values():
            shutil.rmtree(folder, ignore_errors=True)


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path`` (``.<name>.<pid>.tmp``) and rename it onto ``path``: a
    reader, or a run killed meanwhile, sees the old file or the new one, never half of one."""
    path = Path(path)
    temporary = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        temporary.write_text(text)
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; the ones created, outermost first."""
    missing = [parent for parent in (folder, *folder.parents) if not parent.exists()][::-1]
    nearest = missing[0].parent if missing else folder
    if not nearest.is_dir():  # mkdir would say "File exists" of a path below a file
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(nearest))
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as Ctrl-C is (``except KeyboardInterrupt`` catches both, and the same cleanups run).

    A subclass, not KeyboardInterrupt itself: CPython marks a KeyboardInterrupt that ends a string ``exec`` (as
    dataclasses and rosbags' message types run) as unhandled, and then exits by SIGINT even after the program
    caught it and chose its own exit code; it checks for that exact type only."""


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` inside the block, as Ctrl-C raises KeyboardInterrupt, so that cleanups
    run for both."""
    def interrupt(signum, frame):
        raise Terminated(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def os_error_line(error: OSError) -> str:
    """One line for the OS errors a user meets: the path and the system's words (no space, read-only, ...)."""
    where = error.filename or ""
    reason = error.strerror or str(error)
    return f"{where}: {reason}" if where else reason
