"""In a learner's own kernel, checks print one ✓ line on success and a short ✗ message on failure."""

from __future__ import annotations

import nbformat
from nbclient import NotebookClient

SETUP = "import torch\nfrom tfcourse.grading import check_answered, check_function\n"
REFERENCE = "def ref(x):\n    return x * 2\n\ndef inputs():\n    return {'x': torch.randn(3)}\n"


def _run(cells: list[str]) -> list[nbformat.NotebookNode]:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=120, allow_errors=True, kernel_name="python3").execute()
    return nb.cells


def _text(cell) -> str:
    parts = []
    for output in cell.outputs:
        parts.append(output.get("text", ""))
        parts.extend(output.get("traceback", []))
    return "\n".join(parts)


def test_passing_failing_and_answered_cells_read_well():
    cells = _run(
        [
            SETUP + REFERENCE,
            "def mine(x):\n    return x + x\n",
            "check_function(mine, ref, inputs)",
            "def wrong(x):\n    return x * 3\n",
            "check_function(wrong, ref, inputs)",
            "answer = 4\ncheck_answered(answer, 'answer')",
        ]
    )
    assert "✓ passed" in _text(cells[2])
    failed = cells[4]
    assert any(o.output_type == "error" for o in failed.outputs)  # still an error: plain nbgrader scores it 0
    assert "✗ " in _text(failed)
    assert "checks.py" not in _text(failed) and "compare.py" not in _text(failed)
    assert "✓ answered: its value is checked when graded" in _text(cells[5])
