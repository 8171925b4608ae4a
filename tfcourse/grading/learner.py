"""The grader's handle on a learner's notebook running in its sandbox.

:class:`LearnerProcess` starts the sandbox-side server (:mod:`.sandboxed.server`) in a
:mod:`~tfcourse.grading.sandbox`, sends it cells to run and calls to make, and reads back plain values
only (:mod:`.sandboxed.wire`). Every wait has a deadline; a sandbox that overruns one, dies or answers
garbage is killed, with everything it started, and :class:`LearnerCrashed` says what happened.
:class:`LearnerFunction` stands in the grader's namespace for a function the learner defined, so the
checks call it as if it were local.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from tfcourse.grading.cgroup import Cgroup
from tfcourse.grading.compare import LearnerError
from tfcourse.grading.sandbox import Isolation, command
from tfcourse.grading.sandboxed import wire

__all__ = ["CallResult", "CellResult", "LearnerCrashed", "LearnerError", "LearnerFunction", "LearnerProcess"]

_GRACE = 10.0  # seconds past the sandbox's own timeout before the grader kills it


class LearnerCrashed(RuntimeError):
    """The sandbox died, overran its deadline, or broke the protocol; it has been killed."""


@dataclass(frozen=True)
class CellResult:
    """A cell run in the sandbox: its plain-text output, last value's repr, and error (type, message, frames)."""

    ok: bool
    stdout: str = ""
    stderr: str = ""
    value: str | None = None
    error: dict | None = None


@dataclass(frozen=True)
class CallResult:
    """A call of a learner's function: the value, the arguments as they are after it (in-place edits), its
    warnings and forbidden calls, what it printed, or the error it raised."""

    ok: bool
    value: object = None
    args_after: list = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    forbidden_calls: list[str] = field(default_factory=list)
    output: str = ""
    error: dict | None = None


def _text(value: object, limit: int = 20_000) -> str:
    return value[:limit] if isinstance(value, str) else ""


class LearnerProcess:
    """One sandboxed learner process; use as a context manager (it is killed on exit)."""

    def __init__(self, isolation: Isolation, *, forbidden: Iterable[str] = (), timeout: float = 60) -> None:
        self.isolation = isolation
        self.forbidden = sorted(set(forbidden))
        self.timeout = float(timeout)
        self.process: subprocess.Popen | None = None
        self.cgroup: Cgroup | None = None
        self._ready = False
        self.log: list[str] = []
        self._log_size = 0

    # -- life cycle -------------------------------------------------------------------------------------
    def launch(self) -> LearnerProcess:
        """Start the process without waiting for it: it imports torch while the caller does other work."""
        if self.process is not None:
            return self
        req_r, req_w = os.pipe()
        ans_r, ans_w = os.pipe()
        argv, env, limits = command(self.isolation, req_r, ans_w)
        if not self.isolation.unsafe:
            self.cgroup = Cgroup.create(self.isolation.memory_mb * 2**20, self.isolation.processes)
            if self.cgroup is not None:
                limits = _joining(self.cgroup, limits)
        try:
            self.process = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(req_r, ans_w),
                preexec_fn=limits,
                start_new_session=True,
            )
        finally:
            os.close(req_r)
            os.close(ans_w)
        self._requests = os.fdopen(req_w, "wb")
        self._answers_fd = ans_r
        self._answers = os.fdopen(ans_r, "rb", buffering=0)
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def start(self) -> LearnerProcess:
        """Launch (if not yet) and lock the process with :attr:`forbidden`; it is then ready for cells."""
        self.launch()
        hello = self._ask(
            {"op": "hello", "forbidden": self.forbidden, "timeout": self.timeout, "reap": not self.isolation.unsafe},
            startup=True,
        )[0]
        if not hello.get("ok"):
            self.close()
            raise LearnerCrashed(f"the sandbox could not start: {_describe_error(hello.get('error'))}")
        self._ready = True
        return self

    def _drain(self) -> None:
        # What the sandbox writes to its stdout/stderr (C-level prints, crashes) goes to a capped log.
        stream = self.process.stdout if self.process else None
        while stream is not None:
            chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
            if not chunk:
                return
            if self._log_size < 200_000:
                self.log.append(chunk.decode("utf-8", "replace"))
            self._log_size += len(chunk)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def close(self) -> None:
        """Kill the sandbox and everything in it (its process group; the PID namespace does the rest)."""
        if self.process is None:
            if self.cgroup is not None:
                self.cgroup.remove()
                self.cgroup = None
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - the kernel always reaps a SIGKILLed group
            pass
        for stream in (getattr(self, "_requests", None), getattr(self, "_answers", None)):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        if self.process.stdout:
            self.process.stdout.close()
        self.process = None
        self._ready = False
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None

    def __enter__(self) -> LearnerProcess:
        return self.start() if not self._ready else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- protocol -------------------------------------------------------------------------------------------
    def _ask(self, header: dict, tensors: dict | None = None, *, startup: bool = False, timeout: float | None = None):
        if self.process is None:
            raise LearnerCrashed("the sandbox is not running")
        limit = (120.0 if startup else (timeout or self.timeout)) + _GRACE
        try:
            wire.write_frame(self._requests, header, tensors)
        except (BrokenPipeError, OSError):
            raise self._crashed("the sandbox stopped before it could be sent the next request") from None
        deadline = time.monotonic() + limit
        ready, _, _ = select.select([self._answers_fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            self.close()
            raise LearnerCrashed(f"timed out: no answer within {limit:g} s, and the sandbox was stopped")
        try:
            return wire.read_frame(self._answers)
        except EOFError:
            raise self._crashed("the sandbox's process died") from None
        except wire.WireError as error:
            self.close()
            raise LearnerCrashed(f"the sandbox sent a malformed answer ({error}) and was stopped") from None

    def _crashed(self, what: str) -> LearnerCrashed:
        code = self.process.wait(timeout=10) if self.process else None
        detail = ""
        if code is not None and code < 0:
            detail = f" (killed by signal {signal.Signals(-code).name})"
        elif code:
            detail = f" (exit code {code})"
        log = "".join(self.log)
        if "MemoryError" in log or "out of memory" in log.lower():
            detail += "; it ran out of memory"
        self.close()
        return LearnerCrashed(f"{what}{detail}")

    def run_cell(self, index: int, source: str) -> CellResult:
        answer, _ = self._ask({"op": "cell", "index": index, "source": source})
        error = answer.get("error") if not answer.get("ok") else None
        return CellResult(
            ok=bool(answer.get("ok")),
            stdout=_text(answer.get("stdout")),
            stderr=_text(answer.get("stderr")),
            value=_text(answer.get("value")) or None,
            error=error if isinstance(error, dict) else ({"ename": "Error", "evalue": ""} if error else None),
        )

    def names(self, names: Iterable[str]) -> dict[str, tuple[str, object]]:
        """``{name: (kind, value)}`` with kind ``callable``, ``value`` (value decoded) or ``missing``."""
        names = list(names)
        answer, tensors = self._ask({"op": "names", "names": names})
        kinds = answer.get("kinds") if isinstance(answer.get("kinds"), dict) else {}
        values = wire.decode(answer.get("values"), tensors) if answer.get("values") is not None else {}
        values = values if isinstance(values, dict) else {}
        out = {}
        for name in names:
            kind = kinds.get(name) if kinds.get(name) in ("callable", "value") else "missing"
            out[name] = (kind, values.get(name))
        return out

    def call(self, name: str, args: tuple, kwargs: dict, *, seed: int = 0, timeout: float | None = None) -> CallResult:
        payload, tensors = wire.encode([list(args), dict(kwargs)])
        header = {"op": "call", "name": name, "payload": payload, "seed": int(seed)}
        header["timeout"] = timeout or self.timeout
        answer, blob = self._ask(header, tensors, timeout=timeout)
        try:
            decoded = wire.decode(answer.get("answer"), blob) if answer.get("ok") else {}
        except wire.WireError as error:
            return CallResult(False, error={"ename": "WireError", "evalue": str(error)})
        decoded = decoded if isinstance(decoded, dict) else {}
        error = answer.get("error") if isinstance(answer.get("error"), dict) else None
        return CallResult(
            ok=bool(answer.get("ok")) and "result" in decoded,
            value=decoded.get("result"),
            args_after=decoded.get("args_after") if isinstance(decoded.get("args_after"), list) else [],
            warnings=[str(w)[:300] for w in answer.get("warnings", []) if isinstance(w, str)][:20],
            forbidden_calls=[str(c)[:200] for c in answer.get("forbidden_calls", []) if isinstance(c, str)][:10],
            output=_text(answer.get("output")),
            error=error or (None if answer.get("ok") else {"ename": "Error", "evalue": "no answer"}),
        )


def _joining(cgroup: Cgroup, limits):
    def preexec() -> None:
        cgroup.join()  # before exec: bwrap and everything it starts are in the group
        limits()

    return preexec


def _describe_error(error: object) -> str:
    if not isinstance(error, dict):
        return "unknown error"
    return f"{str(error.get('ename', 'Error'))[:100]}: {str(error.get('evalue', ''))[:300]}"


class LearnerFunction:
    """A learner's function as the grader sees it: calling it runs it in the sandbox.

    Attributes:
        name: the function's name in the learner's notebook.
    """

    remote = True  # what the checks look for (they do not import this module: it needs Unix)

    def __init__(self, process: LearnerProcess, name: str, seeds=None, deadline: float | None = None) -> None:
        self.process, self.name, self.__name__ = process, name, name
        self.seeds = seeds
        self.deadline = deadline

    def invoke(self, args: tuple, kwargs: dict) -> CallResult:
        seed = next(self.seeds) if self.seeds is not None else int.from_bytes(os.urandom(4), "little")
        timeout = None
        if self.deadline is not None:
            timeout = max(1.0, self.deadline - time.monotonic())
        return self.process.call(self.name, args, kwargs, seed=seed, timeout=timeout)

    def __call__(self, *args: object, **kwargs: object) -> object:
        result = self.invoke(args, kwargs)
        if not result.ok:
            raise LearnerError(self.name, result.error or {})
        return result.value

    def __repr__(self) -> str:
        return f"<learner function {self.name}>"
