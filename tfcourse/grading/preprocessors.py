"""nbgrader preprocessors that make grading robust for PyTorch notebooks.

* :class:`SafeExecute` is nbgrader's ``Execute`` that survives a dead or unresponsive kernel: the cell that
  was running gets an error output saying what happened, every later code cell gets a "not run" error, and
  the notebook is still scored (cells with errors score zero; cells before the failure keep their points).
* :class:`HideHiddenTests` removes hidden-test regions from feedback, with the tracebacks that quote them.
"""

from __future__ import annotations

import re

from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbgrader import utils
from nbgrader.preprocessors import ClearHiddenTests, Execute

__all__ = ["KERNEL_DIED", "NOT_RUN", "UNRESPONSIVE", "HideHiddenTests", "SafeExecute"]

KERNEL_DIED = "KernelDied"
UNRESPONSIVE = "KernelUnresponsive"
NOT_RUN = "NotRun"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _error(ename: str, evalue: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


def _label(cell: NotebookNode, index: int) -> str:
    grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
    return f"cell {index}" + (f" ({grade_id})" if grade_id else "")


class SafeExecute(Execute):
    """``Execute`` that turns a dead or hung kernel into cell errors instead of aborting the notebook."""

    _stopped: str | None = None

    def preprocess(self, nb, resources=None, km=None):
        self._stopped = None
        return super().preprocess(nb, resources, km)

    def preprocess_cell(self, cell, resources, index):
        if self._stopped is not None:
            if cell.cell_type == "code" and cell.source.strip():
                cell.outputs = [_error(NOT_RUN, f"not run: {self._stopped}")]
            return cell, resources
        try:
            return super().preprocess_cell(cell, resources, index)
        except DeadKernelError:
            what = (
                "the kernel died while running this cell (a crash such as os._exit or a segmentation fault, "
                "or the process was killed)"
            )
            cell.outputs = [*cell.get("outputs", []), _error(KERNEL_DIED, what)]
            self._stopped = f"the kernel died in {_label(cell, index)}"
        except CellTimeoutError:
            what = f"this cell ran longer than {self.timeout} s and the kernel could not be interrupted"
            cell.outputs = [*cell.get("outputs", []), _error(UNRESPONSIVE, what)]
            self._stopped = f"the kernel stopped responding in {_label(cell, index)}"
        self.log.warning("%s; later cells are marked as not run", self._stopped)
        return cell, resources


class HideHiddenTests(ClearHiddenTests):
    """Remove hidden-test regions from test cells and reduce those cells' tracebacks to one line.

    A traceback quotes the source lines around the failing call, so a cell that held hidden tests keeps only
    ``ename: evalue`` (the check's message, which is the feedback) of each error.
    """

    def preprocess_cell(self, cell, resources, cell_index):
        if cell.cell_type != "code":
            return cell, resources
        removed = self._remove_hidden_test_region(cell)
        if removed:
            if not utils.is_grade(cell) and self.enforce_metadata:
                raise RuntimeError("hidden test region in a cell that is not a grade cell")
            for output in cell.get("outputs", []):
                if output.output_type == "error":
                    output.traceback = [_ANSI.sub("", f"{output.ename}: {output.evalue}")]
        return cell, resources
