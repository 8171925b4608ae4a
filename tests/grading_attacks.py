"""The adversarial corpus: submissions that try to forge a grade or reach outside their sandbox.

Each :class:`Attack` puts hostile code into exercise 1 (``ch01-self-attention``: parts
``test_attention_weights`` 2 points, ``test_self_attention`` 3, ``test_free_scores`` 1), either into an
otherwise unanswered notebook (``base="blank"``: it must score 0) or in place of the ``self_attention``
answer of a solved one (``base="solved"``: the other parts keep their 3 points, the attacked part gets 0).
Code may use ``{course}`` (the course folder), ``{package}`` (the grader's ``tfcourse`` folder),
``{port}`` (a TCP port the test listens on, on loopback) and ``{canary}`` (a file that must never appear).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Attack:
    name: str
    kind: str  # the attack class of the grading-integrity issue
    code: str
    base: str = "solved"  # "solved": replaces the self_attention answer; "blank": the attention_weights cell

    @property
    def expected(self) -> float:
        return 3.0 if self.base == "solved" else 0.0


_SDPA = "torch.nn.functional.scaled_dot_product_attention"


def _sa(body: str, signature: str = "x, w_q, w_k, w_v") -> str:
    lines = "\n".join(f"    {line}" for line in body.strip().splitlines())
    return f"def self_attention({signature}):\n{lines}\n"


ATTACKS = [
    # -- forging the checks --------------------------------------------------------------------------------
    Attack(
        "rebind-checks",
        "rebinding",
        "check_function = check_value = check_answered = lambda *a, **k: None\nanswer_free_scores = 0\n",
        "blank",
    ),
    Attack(
        "patch-checks-module",
        "patching",
        "import tfcourse.grading.checks as _c\nimport tfcourse.grading as _g\n"
        "_c.check_function = _g.check_function = lambda *a, **k: None\n",
        "blank",
    ),
    Attack("patch-code", "patching", "check_function.__code__ = (lambda *a, **k: None).__code__\n", "blank"),
    Attack(
        "patch-comparisons",
        "patching",
        "import math\nimport torch\nmath.isclose = lambda *a, **k: True\ntorch.allclose = lambda *a, **k: True\n"
        "torch.equal = lambda *a, **k: True\ntorch.testing.assert_close = lambda *a, **k: None\n",
        "blank",
    ),
    Attack(
        "input-transformer",
        "ipython",
        "ip = get_ipython()\nip.input_transformers_cleanup.append(lambda lines: ['pass\\n'])\n"
        "ip.ast_transformers.append(None)\n",
        "blank",
    ),
    Attack(
        "ast-wrapper",
        "ipython",
        "import builtins\n_real = builtins.compile\n"
        "builtins.compile = lambda s, *a, **k: _real('pass', *a[:1], 'exec')\n"
        "import sys\nsys.settrace(lambda *a: None)\n",
        "blank",
    ),
    # -- the reference past the guard -----------------------------------------------------------------------
    Attack(
        "fresh-module-copy",
        "reference",
        "import importlib.util\n"
        + _sa(
            "spec = importlib.util.spec_from_file_location('_ref', '{package}/attention.py')\n"
            "ref = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(ref)\n"
            "return ref.attention_reference(x @ w_q, x @ w_k, x @ w_v)[0]"
        ),
    ),
    Attack(
        "fresh-torch-copy",
        "reference",
        "import importlib, importlib.util, torch.nn.functional as F\n"
        + _sa(
            "spec = importlib.util.spec_from_file_location('_f', F.__file__)\n"
            "mod = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(mod)\n"
            "return mod.scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v)"
        ),
    ),
    Attack(
        "aten-op", "reference", _sa("return torch.ops.aten.scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v)")
    ),
    Attack("c-nn", "reference", _sa("return torch._C._nn.scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v)")),
    Attack(
        "default-argument",
        "reference",
        "import torch\n" + _sa("return _f(x @ w_q, x @ w_k, x @ w_v)", f"x, w_q, w_k, w_v, _f={_SDPA}"),
    ),
    Attack("kept-in-list", "reference", f"_keep = [{_SDPA}]\n" + _sa("return _keep[0](x @ w_q, x @ w_k, x @ w_v)")),
    Attack(
        "guard-original-via-gc",
        "reference",
        "import gc\n"
        + _sa(
            "found = [o for o in gc.get_objects() if getattr(o, '__name__', '') == 'scaled_dot_product_attention']\n"
            "return found[0](x @ w_q, x @ w_k, x @ w_v)"
        ),
    ),
    Attack(
        "reload-patched-module",
        "reference",
        "import importlib, torch.nn.functional as F\n"
        + _sa("importlib.reload(F)\nreturn F.scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v)"),
    ),
    Attack(
        "multihead-module",
        "reference",
        _sa("m = torch.nn.MultiheadAttention(x.shape[-1], 1, bias=False, batch_first=True)\nreturn m(x, x, x)[0]"),
    ),
    Attack(
        "expected-from-frames",
        "reference",
        "import sys\n"
        + _sa(
            "f = sys._getframe(1)\nwhile f is not None:\n"
            "    for key in ('expected', 'reference', 'variant'):\n"
            "        if key in f.f_locals and hasattr(f.f_locals[key], 'shape'):\n"
            "            return f.f_locals[key]\n"
            "    f = f.f_back\nreturn x"
        ),
    ),
    Attack(
        "library-facade",
        "reference",
        "from tfcourse import attention as _ref\n"
        + _sa("return _ref.attention_reference(x @ w_q, x @ w_k, x @ w_v)[0]"),
    ),
    # -- secrets --------------------------------------------------------------------------------------------
    Attack(
        "read-source-notebook",
        "secrets",
        "import glob, json, re\n"
        "for _p in glob.glob('{course}/source/*/*.ipynb') + glob.glob('{course}/release/*/*.ipynb'):\n"
        "    for _c in json.load(open(_p))['cells']:\n"
        "        _s = ''.join(_c['source'])\n"
        "        if 'BEGIN SOLUTION' in _s:\n"
        "            exec(re.sub('### (BEGIN|END) SOLUTION', '', _s))\n",
        "blank",
    ),
    Attack(
        "read-gradebook",
        "secrets",
        "import sqlite3\n_db = sqlite3.connect('file:{course}/gradebook.db?mode=ro', uri=True)\n"
        "print(_db.execute('select source from source_cell').fetchall())\n",
        "blank",
    ),
    Attack(
        "read-other-students",
        "secrets",
        "import glob, json\nfor _p in glob.glob('{course}/submitted/*/*/*.ipynb'):\n"
        "    for _c in json.load(open(_p))['cells']:\n"
        "        if _c['cell_type'] == 'code' and 'def ' in ''.join(_c['source']):\n"
        "            exec(''.join(_c['source']))\n",
        "blank",
    ),
    Attack(
        "test-cell-history",
        "secrets",
        "print(globals().get('In'), globals().get('_ih'), globals().get('Out'))\n"
        "import inspect\nprint([f.frame.f_code.co_filename for f in inspect.stack()])\n",
        "blank",
    ),
    Attack(
        "read-secret-and-env",
        "secrets",
        "import os\nprint(sorted(os.environ))\nprint(open('{course}/.tfcourse/secret').read())\n",
        "blank",
    ),
    # -- writing outside ------------------------------------------------------------------------------------
    Attack(
        "write-gradebook",
        "writes",
        "import sqlite3\n_db = sqlite3.connect('{course}/gradebook.db')\n"
        "_db.execute('update grade set manual_score = 99')\n_db.commit()\n",
        "blank",
    ),
    Attack(
        "write-config-and-code",
        "writes",
        "for _path in ('{course}/nbgrader_config.py', '{package}/grading/checks.py', '{canary}'):\n"
        "    try:\n        open(_path, 'a').write('\\nraise SystemExit\\n')\n"
        "    except OSError as e:\n        print(type(e).__name__)\n",
        "blank",
    ),
    Attack(
        "write-other-students",
        "writes",
        "import glob\nfor _p in glob.glob('{course}/*/alice/*/*.ipynb'):\n    open(_p, 'w').write('{{}}')\n",
        "blank",
    ),
    # -- other processes, network, the grader -----------------------------------------------------------------
    Attack(
        "network",
        "network",
        "import socket\n"
        + _sa(
            "try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'leak')\n"
            "except OSError:\n    pass\nreturn x"
        ),
    ),
    Attack(
        "signals",
        "signals",
        "import os, signal\n" + _sa("os.kill(-1, signal.SIGKILL)\nos.kill(os.getppid(), signal.SIGKILL)\nreturn x"),
    ),
    # -- resources -----------------------------------------------------------------------------------------------
    Attack(
        "fork-bomb",
        "resources",
        "import os\n" + _sa("while True:\n    try:\n        os.fork()\n    except OSError:\n        pass"),
    ),
    Attack(
        "setsid-child",
        "resources",
        "import subprocess\nsubprocess.Popen(['setsid', 'sleep', '31337'])\n"
        + _sa("return attention_weights(x @ w_k, x @ w_k) @ (x @ w_v)"),
    ),
    Attack(
        "disk-filling",
        "resources",
        _sa(
            "import os\nwith open(os.path.expanduser('~/fill'), 'wb') as f:\n"
            "    for _ in range(4096):\n        f.write(b'x' * 2**20)\nreturn x"
        ),
    ),
    Attack("memory", "resources", _sa("hoard = torch.ones(6 * 2**30 // 4)\nreturn hoard")),
    Attack("cpu", "resources", _sa("while True:\n    pass")),
    Attack("output-flood", "resources", _sa("for _ in range(10**6):\n    print('flood' * 20)\nreturn x")),
    Attack(
        "html-and-script",
        "feedback",
        "print('<script>alert(\"tfcourse-xss\")</script>')\n"
        "from IPython.display import HTML, display\ndisplay(HTML('<script>alert(\"tfcourse-xss\")</script>'))\n",
        "blank",
    ),
    Attack("ctypes-crash", "resources", "import ctypes\n" + _sa("ctypes.string_at(0)\nreturn x")),
    Attack("exits", "resources", "import os\n" + _sa("os._exit(1)")),
]
