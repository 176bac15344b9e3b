"""Notebook displays, through nbclient executing a real notebook on a kernel running this Python."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

import cnndsl

ROOT = Path(__file__).resolve().parent.parent

CELLS = [
    # 0: a network with a "doesn't fit" warning, displayed as the cell's value
    'import cnndsl\nnet = cnndsl.parse("input 3x7x7\\nConv(8, 3, stride=3), flatten, FC(10)")\nnet',
    # 1: the summary: a table in HTML, the text as its plain form
    "net.summary()",
    # 2: a diagnostic prints as the formatted message
    "print(net.warnings[0])",
    # 3: an error in the .cnn text: the message, no traceback through cnndsl's code
    'cnndsl.parse("input 3x8x8\\nFC(10)", filename="bad.cnn")',
]


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    """Run the cells on a kernel spec that starts this interpreter with this checkout importable."""
    spec_root = tmp_path_factory.mktemp("jupyter")
    spec_dir = spec_root / "kernels" / "cnndsl-test"
    spec_dir.mkdir(parents=True)
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "cnndsl test",
        "language": "python",
        "env": {"PYTHONPATH": pythonpath, "NO_COLOR": "1"},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(spec_root)
    try:
        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in CELLS])
        NotebookClient(notebook, kernel_name="cnndsl-test", timeout=120, allow_errors=True).execute()
    finally:
        if old is None:
            del os.environ["JUPYTER_PATH"]
        else:
            os.environ["JUPYTER_PATH"] = old
    return [cell.outputs for cell in notebook.cells]


def result_of(outputs: list[Any]) -> dict[str, str]:
    (result,) = [o for o in outputs if o.output_type == "execute_result"]
    return result.data


def test_network_display_shows_its_warnings(executed: list[Any]) -> None:
    html = result_of(executed[0])["text/html"]
    assert "warning: Conv doesn&#x27;t fit its input 3x7x7" in html
    assert "pad=1 gives (7 - 3 + 2*1)/3 + 1 = 3" in html
    assert "<table>" in html  # the summary table under the drawing


def test_summary_displays_as_an_html_table_and_prints_as_text(executed: list[Any]) -> None:
    data = result_of(executed[1])
    net = cnndsl.parse("input 3x7x7\nConv(8, 3, stride=3), flatten, FC(10)")
    assert data["text/plain"] == str(net.summary())
    assert "<th>Layer</th><th>Kind</th><th>Output</th><th>Params</th><th>MACs</th>" in data["text/html"]
    assert '<td style="text-align:left">Conv 8 3x3 /3</td>' in data["text/html"]
    assert "Total params" in data["text/html"]


def test_a_diagnostic_prints_as_the_formatted_message(executed: list[Any]) -> None:
    (stream,) = executed[2]
    assert stream.text.startswith("<string>:2:1: warning: Conv doesn't fit")
    assert "    ^\n" in stream.text and "hint: pad=1" in stream.text


def test_an_error_shows_the_message_without_library_traceback(executed: list[Any]) -> None:
    (error,) = [o for o in executed[3] if o.output_type == "error"]
    text = "\n".join(error.traceback)
    assert error.ename == "CnnDslError"
    assert "bad.cnn:2:1: error: FC needs a flat input; got an image 3x8x8" in text
    assert "hint: insert `flatten`" in text
    assert "network.py" not in text and "checker.py" not in text and "Traceback" not in text


def test_str_of_diagnostic_and_render_traceback_without_jupyter() -> None:
    net = cnndsl.parse("input 3x7x7\nConv(8, 3, stride=3)")
    assert str(net.warnings[0]) == net.warnings[0].format()
    with pytest.raises(cnndsl.CnnDslError) as info:
        cnndsl.parse("input 3x8x8\nFC(10)\nFC(5")
    lines = info.value._render_traceback_()
    assert lines[0] == "CnnDslError: 1 error"
    assert any("`[`" in line or "never closed" in line or "unexpected" in line for line in lines[1:])
