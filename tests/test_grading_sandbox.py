"""The grading sandbox and its wire: what crosses the boundary, what the sandbox can reach, what it leaves.

Wire tests run everywhere; sandbox tests skip (saying why) where bubblewrap cannot make namespaces.
"""

from __future__ import annotations

import io
import json
import math
import struct

import psutil
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tfcourse.grading.learner import LearnerCrashed, LearnerProcess
from tfcourse.grading.sandbox import Isolation, sandbox_problem
from tfcourse.grading.sandboxed import wire

needs_sandbox = pytest.mark.skipif(sandbox_problem() is not None, reason=f"no grading sandbox: {sandbox_problem()}")


def _round_trip(value):
    tree, tensors = wire.encode(value)
    buffer = io.BytesIO()
    wire.write_frame(buffer, {"v": tree}, tensors)
    buffer.seek(0)
    header, received = wire.read_frame(buffer)
    return wire.decode(header["v"], received)


# -- the wire ---------------------------------------------------------------------------------------------------
def test_values_cross_the_wire_unchanged():
    value = {
        "x": torch.randn(2, 3),
        "mask": torch.tensor([[True, False]]),
        "ids": torch.arange(5),
        "half": torch.randn(4, dtype=torch.bfloat16),
        "empty": torch.zeros(0, 3),
        "view": torch.arange(12).reshape(3, 4).T,  # not contiguous
        "scalars": [1, 2.5, None, True, "text", float("inf")],
        "pair": (torch.ones(1), 3),
        "dtype": torch.float64,
    }
    back = _round_trip(value)
    for key in ("x", "mask", "ids", "half", "empty", "view"):
        assert torch.equal(back[key], value[key]) and back[key].dtype == value[key].dtype
    assert back["scalars"] == value["scalars"]
    assert isinstance(back["pair"], tuple) and torch.equal(back["pair"][0], torch.ones(1))
    assert back["dtype"] is torch.float64
    assert math.isnan(_round_trip(float("nan")))


def test_unsupported_values_arrive_as_opaque_markers():
    class Custom:
        def __repr__(self):
            raise RuntimeError("hostile repr")

    back = _round_trip([Custom(), torch.nn.Linear(2, 2), torch.zeros(2, dtype=torch.complex64)])
    assert all(isinstance(v, wire.Opaque) for v in back)
    assert back[0].type_name == "Custom"


def test_oversized_and_malformed_frames_are_refused():
    too_big = io.BytesIO(struct.pack("<QQ", 2**40, 0))
    with pytest.raises(wire.WireError, match="over the limit"):
        wire.read_frame(too_big)
    garbage = b"not json"
    with pytest.raises(wire.WireError):
        wire.read_frame(io.BytesIO(struct.pack("<QQ", len(garbage), 0) + garbage))
    with pytest.raises(EOFError):
        wire.read_frame(io.BytesIO(struct.pack("<QQ", 10, 0) + b"{}"))
    with pytest.raises(wire.WireError, match="unknown tensor"):
        wire.decode({"tensor": "t9"}, {})
    nested: object = 1
    for _ in range(100):
        nested = {"list": [nested]}
    with pytest.raises(wire.WireError, match="deeply"):
        wire.decode(nested, {})


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    # Keys are mostly the wire's own, so the decoder's branches are reached with wrong-typed contents.
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["tensor", "float", "dtype", "list", "tuple", "dict", "opaque", "repr"])
            | st.text(max_size=6),
            inner,
            max_size=3,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(_json)
def test_decoding_any_json_gives_plain_values_or_a_wire_error(tree):
    """Whatever a hostile sandbox sends, the grader gets plain values (never code) or a WireError."""
    allowed = (type(None), bool, int, float, str, list, tuple, dict, torch.Tensor, torch.dtype, wire.Opaque)

    def check(value):
        assert isinstance(value, allowed)
        if isinstance(value, (list, tuple)):
            for v in value:
                check(v)
        if isinstance(value, dict):
            for k, v in value.items():
                check(k)
                check(v)

    try:
        json.dumps(tree)
        check(wire.decode(tree, {}))
    except wire.WireError:
        pass


# -- the sandbox -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def learner():
    with LearnerProcess(Isolation(), forbidden=["torch.nn.functional.scaled_dot_product_attention"], timeout=5) as lp:
        yield lp


def _run(learner, source):
    return learner.run_cell(99, source)


@needs_sandbox
def test_the_sandbox_is_an_unprivileged_process_without_the_course_or_the_network(learner, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("hidden tests")
    secret.chmod(0o644)
    result = _run(
        learner,
        "import os, socket\n"
        "print(os.getuid(), os.getgid())\n"
        f"print(os.path.exists({str(secret)!r}), os.path.exists('/work'), sorted(os.listdir('/')))\n"
        "try:\n    socket.create_connection(('127.0.0.1', 22), timeout=1)\nexcept OSError as e:\n"
        "    print('network', type(e).__name__)\n"
        "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])\n",
    )
    assert result.ok, result.error
    uid, gid, *rest = result.stdout.split()
    assert int(uid) >= 40000 and int(gid) >= 40000
    assert "False" in rest[0] and "network" in result.stdout
    assert result.stdout.strip().endswith("0000000000000000")  # no capabilities at all


@needs_sandbox
def test_tfcourse_is_a_facade_and_forbidden_torch_routes_fail(learner):
    result = _run(learner, "from tfcourse import attention\nimport tfcourse\nprint(hasattr(tfcourse, '__file__'))")
    assert result.ok and result.stdout.strip() == "False"
    assert not _run(learner, "attention.attention_reference(1, 2, 3)").ok
    _run(learner, "import torch\ndef f(q):\n    return torch.ops.aten.scaled_dot_product_attention(q, q, q)\n")
    call = learner.call("f", (torch.randn(1, 2, 3),), {})
    assert not call.ok and call.forbidden_calls == ["torch.nn.functional.scaled_dot_product_attention"]


@needs_sandbox
def test_the_sandbox_cannot_write_outside_its_scratch_space(learner):
    result = _run(
        learner,
        "import os, sys, torch\nfor p in (sys.prefix + '/x', os.path.dirname(torch.__file__) + '/x', '/grader/x'):\n"
        "    try:\n        open(p, 'w')\n        print('wrote', p)\n    except OSError:\n        pass\n"
        "open(os.path.expanduser('~/mine'), 'w').write('ok')\n",
    )
    assert result.ok and "wrote" not in result.stdout


@needs_sandbox
def test_limits_hold_and_nothing_outlives_the_sandbox():
    with LearnerProcess(Isolation(disk_mb=8), timeout=5) as lp:
        full = lp.run_cell(0, "open('/home/learner/big', 'wb').write(b'x' * 16 * 2**20)")
        assert not full.ok and full.error["ename"] in ("OSError", "FileTooLarge")
        lp.run_cell(1, "import subprocess\nsubprocess.Popen(['setsid', 'sleep', '4242'])\n")
        memory = lp.run_cell(2, "import torch\nx = torch.ones(8 * 2**30 // 4)")
        assert not memory.ok and memory.error["ename"] in ("MemoryError", "RuntimeError")
        bomb = lp.run_cell(3, "import os\nfor _ in range(200):\n    os.fork()\n")
        assert not bomb.ok  # the process limit stops it: fork raises
        slow = lp.run_cell(4, "while True:\n    pass")
        assert slow.error["ename"] == "CellTimeout"
    strays = [p for p in psutil.process_iter(["cmdline"]) if "4242" in " ".join(p.info["cmdline"] or [])]
    assert strays == []


@needs_sandbox
def test_a_dead_sandbox_is_reported_not_hung():
    with LearnerProcess(Isolation(), timeout=5) as lp:
        lp.run_cell(0, "import os\ndef die():\n    os._exit(3)\n")
        with pytest.raises(LearnerCrashed, match="died"):
            lp.call("die", (), {})


def test_unsafe_mode_still_runs_a_separate_process():
    with LearnerProcess(Isolation(unsafe=True), timeout=5) as lp:
        result = lp.run_cell(0, "import os\ndef pid():\n    return os.getpid()\n")
        assert result.ok
        call = lp.call("pid", (), {})
        assert call.ok and call.value != __import__("os").getpid()


@needs_sandbox
def test_the_whole_sandbox_shares_one_memory_limit():
    """Sixteen processes of 256 MiB each meet the sandbox's 2 GiB as one limit (where cgroups can be made)."""
    with LearnerProcess(Isolation(memory_mb=2048), timeout=20) as lp:
        if lp.cgroup is None:
            pytest.skip("no cgroup can be made here; only the per-process limits apply")
        result = lp.run_cell(
            0,
            "import os, time\nkids = []\nfor _ in range(16):\n    pid = os.fork()\n    if pid == 0:\n"
            "        open('/proc/self/oom_score_adj', 'w').write('1000')\n"
            "        block = bytearray(256 * 2**20)\n        block[::4096] = b'x' * len(block[::4096])\n"
            "        time.sleep(5)\n        os._exit(0)\n    kids.append(pid)\n"
            "codes = [os.waitpid(pid, 0)[1] for pid in kids]\nprint(sum(1 for c in codes if c != 0))\n",
        )
        assert result.ok, result.error
        assert int(result.stdout.split()[-1]) > 0  # some were killed by the group's out-of-memory killer
        folders = list(lp.cgroup.folders)
    assert not any(f.exists() for f in folders)
