"""One control group per sandbox: a memory and a process limit on the sandbox's whole process tree.

Address-space and process-count rlimits apply per process and per uid; a cgroup bounds the sum, so a sandbox
that forks sixty processes of a few GiB each meets one limit and the kernel's out-of-memory killer acts
inside the group, never on the grader. Both cgroup layouts are handled (v1: a folder under each of the
``memory`` and ``pids`` hierarchies; v2: one folder with both controllers). Where no group can be made (not
root, no cgroup file system), :meth:`Cgroup.create` returns None and the rlimits still hold.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

__all__ = ["Cgroup"]

ROOT = Path("/sys/fs/cgroup")


def _own_paths() -> dict[str, str]:
    """``{controller or "": path}`` of this process's cgroups (``""`` is the v2 unified hierarchy)."""
    paths = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return paths
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


class Cgroup:
    """The folders of one sandbox's cgroup; write a pid into :meth:`join` to put a process (and its children) in."""

    def __init__(self, folders: list[Path]) -> None:
        self.folders = folders

    @classmethod
    def create(cls, memory_bytes: int, processes: int) -> Cgroup | None:
        name = f"tfcourse-sandbox-{uuid.uuid4().hex[:12]}"
        own = _own_paths()
        made: list[Path] = []
        try:
            if (ROOT / "memory").is_dir() and (ROOT / "pids").is_dir():  # v1
                for controller, limit_file, value in (
                    ("memory", "memory.limit_in_bytes", memory_bytes),
                    ("pids", "pids.max", processes),
                ):
                    folder = ROOT / controller / own.get(controller, "/").lstrip("/") / name
                    folder.mkdir()
                    made.append(folder)
                    (folder / limit_file).write_text(str(value))
            elif (ROOT / "cgroup.controllers").is_file():  # v2
                folder = ROOT / own.get("", "/").lstrip("/") / name
                folder.mkdir()
                made.append(folder)
                (folder / "memory.max").write_text(str(memory_bytes))
                (folder / "pids.max").write_text(str(processes))
            else:
                return None
        except OSError:
            for folder in reversed(made):
                try:
                    folder.rmdir()
                except OSError:
                    pass
            return None
        return cls(made)

    def join(self, pid: int | None = None) -> None:
        """Move ``pid`` (default: this process) into the group; its future children stay in it."""
        for folder in self.folders:
            (folder / "cgroup.procs").write_text(str(pid or os.getpid()))

    def pids(self) -> list[int]:
        found: set[int] = set()
        for folder in self.folders:
            try:
                found.update(int(p) for p in (folder / "cgroup.procs").read_text().split())
            except OSError:
                pass
        return sorted(found)

    def remove(self) -> None:
        """Kill whatever is still in the group, then delete its folders."""
        for _ in range(50):
            left = self.pids()
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)
        for folder in self.folders:
            for _ in range(50):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
