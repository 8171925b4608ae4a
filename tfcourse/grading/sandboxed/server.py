"""The learner's side of grading: run notebook cells and call the learner's functions on request.

Started by the grader inside the sandbox as ``python -I -c "...; server.main(IN_FD, OUT_FD)"``. Requests
and answers are :mod:`.wire` frames on two pipes (no sockets: the sandbox has no network). The learner's
cells run in one namespace, in notebook order; each call runs the learner's function on the inputs the
grader drew and sends back what it returned, the inputs as they are afterwards (to catch in-place edits),
its warnings and the forbidden callables it tried. Text output is kept as plain text, capped.
"""

from __future__ import annotations

import ast
import io
import linecache
import os
import random
import signal
import sys
import traceback
import warnings

import torch

from . import lockdown, wire

_OUTPUT_CAP = 20_000


class _Capped(io.TextIOBase):
    """A text stream that keeps the first ``cap`` characters and counts the rest."""

    def __init__(self, cap: int = _OUTPUT_CAP) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.cap = cap

    def writable(self) -> bool:
        return True

    def write(self, text) -> int:
        text = str(text)
        if self.size < self.cap:
            self.parts.append(text[: self.cap - self.size])
        self.size += len(text)
        return len(text)

    def value(self) -> str:
        text = "".join(self.parts)
        return text + (f"\n… {self.size - self.cap} more characters of output not kept" if self.size > self.cap else "")


class _CellTimeout(BaseException):
    pass


def _alarm(signum, frame):
    raise _CellTimeout


class _Shell:
    """Enough of IPython's ``get_ipython()`` for notebooks whose cells use magics: they are skipped."""

    def _skip(self, *args, **kwargs):
        print(f"(skipped while grading: {' '.join(str(a) for a in args)[:80]})")

    run_line_magic = run_cell_magic = system = getoutput = _skip


def _learner_frames(tb) -> list[str]:
    frames = [f for f in traceback.extract_tb(tb) if f.filename.startswith("<cell ")]
    lines = []
    for frame in frames[-8:]:
        lines.append(f"  {frame.filename[1:-1]}, line {frame.lineno}, in {frame.name}")
        if frame.line:
            lines.append(f"    {frame.line.strip()[:200]}")
    return lines


def _error(error: BaseException) -> dict:
    try:
        text = str(error)
    except Exception:
        text = "?"
    return {
        "ename": type(error).__name__[:100],
        "evalue": text[:2000],
        "traceback": _learner_frames(error.__traceback__),
    }


class Server:
    """The learner's namespace and the three requests on it: run a cell, report names, call a function."""

    def __init__(self, forbidden: list[str], timeout: float, reap: bool = False) -> None:
        # Only in the sandbox (its own PID namespace and uid) may kill(-1) be used to end strays.
        self.reap = reap and os.getuid() >= 40000
        self.pid = os.getpid()
        self.namespace: dict = {"__name__": "__main__", "get_ipython": lambda: _Shell()}
        self.timeout = timeout
        torch.set_num_threads(1)
        lockdown.install_facade()
        lockdown.lock(forbidden)
        signal.signal(signal.SIGALRM, _alarm)

    def _run(self, action, timeout: float):
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            return action()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def _reap(self) -> None:
        """End every other process of the sandbox (a fork bomb, a forgotten child); kill(-1) spares the caller."""
        if os.getpid() != self.pid:
            os._exit(0)  # a copy forked by the learner's code: it must not go on answering requests
        if self.reap:
            try:
                os.kill(-1, signal.SIGKILL)
            except OSError:
                pass
            try:
                while os.waitpid(-1, os.WNOHANG)[0]:
                    pass
            except ChildProcessError:
                pass

    def cell(self, index: int, source: str, timeout: float) -> dict:
        filename = f"<cell {index}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        out, err = _Capped(), _Capped()
        result: dict = {"ok": True}
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, err
        try:
            tree = ast.parse(source, filename)
            last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None

            def run():
                exec(compile(tree, filename, "exec"), self.namespace)
                if last is not None:
                    value = eval(compile(ast.Expression(last.value), filename, "eval"), self.namespace)
                    if value is not None:
                        result["value"] = repr(value)[:_OUTPUT_CAP]

            with warnings.catch_warnings():
                warnings.simplefilter("default")
                self._run(run, timeout)
        except _CellTimeout:
            result = {"ok": False, "error": {"ename": "CellTimeout", "evalue": f"{timeout:g}", "traceback": []}}
        except BaseException as error:  # SystemExit and KeyboardInterrupt are the learner's too
            result = {"ok": False, "error": _error(error)}
        finally:
            sys.stdout, sys.stderr = saved
            self._reap()
        result.update(stdout=out.value(), stderr=err.value())
        return result

    def names(self, names: list[str]) -> tuple[dict, dict]:
        kinds, values = {}, {}
        for name in names:
            if name not in self.namespace:
                kinds[name] = "missing"
            elif callable(self.namespace[name]):
                kinds[name] = "callable"
            else:
                kinds[name] = "value"
                values[name] = self.namespace[name]
        tree, tensors = wire.encode(values)
        return {"ok": True, "kinds": kinds, "values": tree}, tensors

    def call(self, header: dict, tensors: dict) -> tuple[dict, dict]:
        name = header["name"]
        args, kwargs = wire.decode(header["payload"], tensors)
        seed = int(header.get("seed", 0))
        torch.manual_seed(seed)
        random.seed(seed)
        fn = self.namespace.get(name)
        del lockdown.CALLS[:]
        out = _Capped()
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = out
        result: dict = {}
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                value = self._run(lambda: fn(*args, **kwargs), float(header.get("timeout", self.timeout)))
            answer = {"ok": True, "result": value, "args_after": args}
            result["warnings"] = list(dict.fromkeys(f"{w.category.__name__}: {w.message}"[:300] for w in caught))
        except _CellTimeout:
            answer = {}
            result["error"] = {"ename": "CallTimeout", "evalue": "", "traceback": []}
        except BaseException as error:
            answer = {}
            result["error"] = _error(error)
        finally:
            sys.stdout, sys.stderr = saved
            self._reap()
        result["ok"] = "error" not in result
        result["forbidden_calls"] = list(dict.fromkeys(str(c) for c in lockdown.CALLS))[:10]
        result["output"] = out.value()
        tree, blob = wire.encode(answer)
        result["answer"] = tree
        return result, blob


def main(in_fd: int, out_fd: int) -> None:
    """Serve requests from pipe ``in_fd`` and answer on ``out_fd`` until the grader closes the pipe."""
    requests = os.fdopen(in_fd, "rb", buffering=0)
    answers = os.fdopen(out_fd, "wb")
    hello, _ = wire.read_frame(requests)
    try:
        server = Server(list(hello.get("forbidden", [])), float(hello.get("timeout", 60)), bool(hello.get("reap")))
        wire.write_frame(answers, {"ok": True, "pid": os.getpid()})
    except BaseException as error:
        wire.write_frame(answers, {"ok": False, "error": _error(error)})
        return
    while True:
        try:
            header, tensors = wire.read_frame(requests)
        except EOFError:
            return
        op = header.get("op")
        try:
            if op == "cell":
                wire.write_frame(answers, server.cell(int(header["index"]), str(header["source"]), server.timeout))
            elif op == "names":
                wire.write_frame(answers, *server.names([str(n) for n in header["names"]]))
            elif op == "call":
                wire.write_frame(answers, *server.call(header, tensors))
            elif op == "exit":
                return
            else:
                wire.write_frame(answers, {"ok": False, "error": {"ename": "Protocol", "evalue": str(op)[:50]}})
        except BrokenPipeError:
            return
        except Exception as error:  # an answer that could not be encoded, say
            wire.write_frame(answers, {"ok": False, "error": _error(error)})
