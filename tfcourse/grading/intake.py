"""Take a submission in safely: only the assignment's notebooks, as regular files of a sane size.

A submission folder is whatever a student (or a script) left there. Before anything reads it, each expected
notebook is checked without following links: a symbolic link (say, to ``source/`` or the gradebook), a
device, a folder, a file over :data:`MAX_NOTEBOOK_BYTES` or a file that is not a notebook is refused with a
reason, and everything else in the folder is ignored and listed. What passes is copied into a fresh
``intake/<student>/<assignment>/`` folder, and nbgrader grades from there, so no link or stray file of the
submission goes near grading. The student's own folder is never changed.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

__all__ = ["INTAKE", "MAX_NOTEBOOK_BYTES", "Intake", "take_in"]

INTAKE = "intake"
MAX_NOTEBOOK_BYTES = 20 * 2**20
_TIMESTAMP = "timestamp.txt"


@dataclass
class Intake:
    """What :func:`take_in` accepted (notebook ids), refused (``{notebook id: reason}``) and ignored."""

    folder: Path
    accepted: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def _read_regular(path: Path, limit: int) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes; ``ValueError`` says why not."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise
    if stat.S_ISLNK(info.st_mode):
        raise ValueError("it is a symbolic link, not a file (only the notebook itself is graded)")
    if not stat.S_ISREG(info.st_mode):
        raise ValueError("it is not a regular file")
    if info.st_size > limit:
        raise ValueError(f"it is {info.st_size / 2**20:.1f} MiB, over the limit of {limit / 2**20:g} MiB")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ValueError("it is a symbolic link, not a file") from None
        raise
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise ValueError("it is not a regular file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"it is over the limit of {limit / 2**20:g} MiB")
    return data


def take_in(root: Path | str, name: str, student: str, notebooks: list[str]) -> Intake:
    """Check ``submitted/<student>/<name>/`` and copy what passes into ``intake/<student>/<name>/``."""
    root = Path(root)
    submitted = root / "submitted" / student / name
    folder = root / INTAKE / student / name
    if folder.exists() or folder.is_symlink():
        shutil.rmtree(folder) if folder.is_dir() and not folder.is_symlink() else folder.unlink()
    folder.mkdir(parents=True)
    intake = Intake(folder)
    for level in (submitted.parent, submitted):
        if level.is_symlink() or not level.is_dir():
            reason = f"refused: {level.relative_to(root)} is a symbolic link or not a folder"
            intake.refused = dict.fromkeys(notebooks, reason)
            return intake
    expected = {f"{nb}.ipynb": nb for nb in notebooks}
    present = {entry.name for entry in os.scandir(submitted)}
    for filename, notebook in expected.items():
        if filename not in present:
            intake.missing.append(notebook)
            continue
        try:
            data = _read_regular(submitted / filename, MAX_NOTEBOOK_BYTES)
        except ValueError as error:
            intake.refused[notebook] = f"refused: {filename}: {str(error)[:200]}"
            continue
        except OSError as error:
            intake.refused[notebook] = f"refused: {filename} could not be read ({error.strerror})"
            continue
        try:
            nbformat.reads(data.decode("utf-8"), as_version=4)
        except Exception as error:  # JSON, Unicode and schema errors
            intake.refused[notebook] = f"{filename} is not a valid notebook: {str(error)[:200]}"
            continue
        (folder / filename).write_bytes(data)
        intake.accepted.append(notebook)
    if _TIMESTAMP in present:
        try:
            (folder / _TIMESTAMP).write_bytes(_read_regular(submitted / _TIMESTAMP, 1024))
        except (ValueError, OSError):
            intake.ignored.append(f"{_TIMESTAMP} (not a small regular file)")
    intake.ignored += sorted(present - set(expected) - {_TIMESTAMP})
    return intake
