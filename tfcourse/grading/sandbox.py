"""The sandbox each graded notebook's code runs in: bubblewrap namespaces, an unprivileged uid, limits.

One sandbox per notebook execution, built from Debian's ``bwrap`` (bubblewrap) and util-linux's ``setpriv``:

* a private mount namespace holding read-only copies of the system and the Python installation, an empty
  size-limited tmpfs as the working directory and ``/tmp``, and the sandbox-side grading code; the course
  folder, the gradebook, ``source/``, other students, the repository and ``tfcourse`` itself are absent
  (an installed ``tfcourse`` package is hidden under an empty tmpfs);
* new PID, network (loopback only, so no other kernel or the outside is reachable), IPC and UTS
  namespaces; a new session (no terminal to inject into); every process it starts, ``setsid`` ones too,
  dies with it, because the namespace's first process is killed when the grader kills the sandbox;
* an unprivileged uid of its own with every capability dropped and ``no_new_privs``; limits on address
  space, processes, file size, CPU time and core files, and (where the grader may make one) a cgroup that
  bounds the memory and process count of the whole tree (:mod:`~tfcourse.grading.cgroup`).

As root (this machine, CI), bwrap runs privileged and ``setpriv`` drops to the uid; as another user it uses
an unprivileged user namespace. :func:`sandbox_problem` says why a sandbox cannot be made here; graders
refuse to grade then, unless the instructor passes ``--unsafe``.
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Isolation", "SandboxUnavailable", "command", "sandbox_problem"]

SANDBOX_CODE = Path(__file__).with_name("sandboxed")
HOME = "/home/learner"
_SYSTEM = ("/usr", "/bin", "/lib", "/lib64", "/sbin", "/etc/ld.so.cache", "/etc/alternatives", "/etc/localtime")


class SandboxUnavailable(RuntimeError):
    """No sandbox can be made on this machine; the message says why and what to do."""


@dataclass(frozen=True)
class Isolation:
    """Limits of one sandbox.

    Attributes:
        memory_mb: address space of each process (``RLIMIT_AS``); PyTorch alone maps about 1.5 GiB.
        processes: processes and threads the sandbox's uid may have (``RLIMIT_NPROC``): stops fork bombs.
        disk_mb: size of the working directory and of ``/tmp`` (tmpfs, in memory), each.
        cpu_seconds: CPU time of each process (``RLIMIT_CPU``).
        file_mb: largest file a process may write (``RLIMIT_FSIZE``).
        unsafe: no sandbox at all, only a separate process (for a learner's own machine, or ``--unsafe``).
    """

    memory_mb: int = 4096
    processes: int = 64
    disk_mb: int = 64
    cpu_seconds: int = 1800
    file_mb: int = 32
    unsafe: bool = False


def _uid() -> int:
    # A uid of its own per grading process, so that process limits count this sandbox only.
    return 40000 + os.getpid() % 20000


def _limits(isolation: Isolation):
    def apply() -> None:
        mib = 2**20
        for limit, value in (
            (resource.RLIMIT_AS, isolation.memory_mb * mib),
            (resource.RLIMIT_NPROC, isolation.processes),
            (resource.RLIMIT_FSIZE, isolation.file_mb * mib),
            (resource.RLIMIT_CPU, isolation.cpu_seconds),
            (resource.RLIMIT_CORE, 0),
        ):
            resource.setrlimit(limit, (value, value))

    return apply


def _hidden_packages(binds: list[str]) -> list[str]:
    """Installed copies of tfcourse inside the bound trees: each is covered by an empty tmpfs."""
    import tfcourse

    package = Path(tfcourse.__file__).resolve().parent
    return [str(package)] if any(package.is_relative_to(b) for b in binds) else []


def command(isolation: Isolation, in_fd: int, out_fd: int) -> tuple[list[str], dict[str, str], object]:
    """``(argv, environment, preexec_fn)`` that start the sandbox-side server on pipes ``in_fd``/``out_fd``."""
    if isolation.unsafe:
        home = tempfile.mkdtemp(prefix="tfcourse-unsafe-")
        os.symlink(SANDBOX_CODE, Path(home) / "sandboxed")
        boot = f"import sys; sys.path.insert(0, {home!r}); from sandboxed import server; server.main({in_fd}, {out_fd})"
        env = {**_environment(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        return [sys.executable, "-I", "-c", boot], env, _limits(isolation)
    problem = sandbox_problem()
    if problem:
        raise SandboxUnavailable(problem)
    binds = sorted({str(Path(p).resolve()) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})
    argv = ["bwrap", "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net", "--unshare-ipc"]
    argv += ["--unshare-uts", "--unshare-cgroup-try", "--hostname", "sandbox", "--clearenv"]
    # The scratch folders first: a Python installation under /tmp (a clone's venv, say) is bound inside them.
    size = str(isolation.disk_mb * 2**20)
    argv += [*_parents(HOME), "--perms", "1777", "--size", size, "--tmpfs", HOME]
    argv += ["--perms", "1777", "--size", size, "--tmpfs", "/tmp"]
    for path in _SYSTEM:
        argv += ["--ro-bind-try", path, path]
    for path in binds:
        argv += [*_parents(path), "--ro-bind", path, path]
    for path in _hidden_packages(binds):
        argv += ["--tmpfs", path, "--remount-ro", path]
    argv += [*_parents("/grader/sandboxed"), "--ro-bind", str(SANDBOX_CODE), "/grader/sandboxed"]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--chdir", HOME]
    for key, value in _environment(HOME).items():
        argv += ["--setenv", key, value]
    boot = f"import sys; sys.path.insert(0, '/grader'); from sandboxed import server; server.main({in_fd}, {out_fd})"
    python = [sys.executable, "-I", "-c", boot]
    if os.geteuid() == 0:
        uid = str(_uid())
        drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all"]
        drop += ["--bounding-set=-all", "--no-new-privs", "--"]
        argv += ["--", *drop, *python]
    else:
        argv += ["--unshare-user", "--uid", "65534", "--gid", "65534", "--cap-drop", "ALL", "--", *python]
    return argv, {"PATH": "/usr/bin:/bin"}, _limits(isolation)


def _parents(path: str) -> list[str]:
    # bwrap would create the missing parents of a mount point as private (0700) folders, which the
    # sandbox's uid could not enter; create them world-readable first.
    out = []
    for parent in reversed(Path(path).parents[:-1]):
        out += ["--perms", "0755", "--dir", str(parent)]
    return out


def _environment(home: str) -> dict[str, str]:
    return {
        "HOME": home,
        "TMPDIR": "/tmp" if home == HOME else home,
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


@functools.lru_cache(maxsize=1)
def sandbox_problem() -> str | None:
    """None when a sandbox can be made here; otherwise what is missing, in words an instructor can act on."""
    if not sys.platform.startswith("linux"):
        return f"the grading sandbox needs Linux namespaces; this is {sys.platform}"
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return "setpriv is not installed (Debian/Ubuntu: apt-get install util-linux)"
    trial = ["bwrap", "--die-with-parent", "--unshare-pid", "--unshare-net"]
    trial += [arg for path in _SYSTEM for arg in ("--ro-bind-try", path, path)]
    trial += ["--proc", "/proc", "--dev", "/dev"]
    if os.geteuid() == 0:
        trial += ["--", "setpriv", "--reuid=40000", "--regid=40000", "--clear-groups", "--", "true"]
    else:
        trial += ["--unshare-user", "--", "true"]
    try:
        done = subprocess.run(trial, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bubblewrap could not start: {error}"
    if done.returncode != 0:
        return f"bubblewrap could not create namespaces here: {done.stderr.strip()[:300]}"
    return None
