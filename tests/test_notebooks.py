"""The notebooks run top to bottom on small data (nbclient, the venv's own Python as kernel).

A kernelspec pointing at ``sys.executable`` is written to a temporary JUPYTER_PATH, so this works on a
fresh machine where only the venv exists (no ``ipykernel install`` into the user's folders).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import ipykernel  # noqa: F401 - the kernel the notebooks run in
import nbclient
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
KERNEL = "dsgd-test-venv"
SMALL = {"01_quickstart.ipynb": "N_EVENTS, N_USERS, N_ITEMS, DAYS, SEED = 3000, 60, 120, 14, 1",
         "02_batch_vs_online.ipynb": "N_EVENTS, N_USERS, N_ITEMS, DAYS, SEED = 3000, 60, 120, 21, 1\n"
                                     "BATCH_EPOCHS = 3",
         "03_streaming_kafka.ipynb": "N_EVENTS, N_USERS, N_ITEMS, BATCH = 3000, 100, 60, 1000"}
#: What each notebook must show on the small data (regular expressions over its text outputs), and
#: whether it displays an image (02 shows its PNG; 03's matplotlib figure is not rendered under Agg).
SHOWS = {
    "01_quickstart.ipynb": ([r"^3,000 events, 60 users, 114 items$",
                             r"^30 micro-batches; 60 users, 114 items; loss of the positives: first batch \d\.\d{3}, "
                             r"last batch \d\.\d{3}$",
                             r"dcg_off", r"online DSGD vs popularity \(mode off\): 0\.\d{4} vs 0\.\d{4}"], False),
    "02_batch_vs_online.ipynb": ([r"^3,000 events, \d+ users, \d+ items$", r"'events': 3000",
                                  r"(?s)popularity.*online.*batch.*batch\+online"], True),
    "03_streaming_kafka.ipynb": ([r"^3000 events; \d+ users; \d+ items$", r"records sent: 3002$",
                                  r"rows_quarantined", r"malformed_json", r"missing_item",
                                  r"^top-10 for \S+ : \[('[^']+', ){9}'[^']+'\]$", r"^broker stopped: True$"], False),
}


def _outputs(nb) -> tuple[str, int]:
    """All text the notebook printed or displayed, and the number of images it showed."""
    text, images = [], 0
    for c in nb.cells:
        for o in c.get("outputs", []) if c.cell_type == "code" else []:
            text.append(o.get("text", ""))
            data = o.get("data", {})
            text.append(data.get("text/plain", ""))
            images += "image/png" in data
    return "\n".join(text), images


@pytest.fixture(scope="module")
def kernel_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "dsgd venv (tests)", "language": "python"}))
    return root


@pytest.mark.parametrize("name", sorted(SMALL))
def test_notebook_runs_top_to_bottom_on_small_data(name, kernel_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    assert "parameters" in nb.cells[first].metadata.get("tags", []) and "DATA_PATH" in nb.cells[first].source
    injected = nbformat.v4.new_code_cell(f"# injected parameters\nDATA_PATH = None\n{SMALL[name]}")
    nb.cells.insert(first + 1, injected)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name=KERNEL,
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    text, images = _outputs(nb)
    patterns, figure = SHOWS[name]
    missing = [p for p in patterns if not re.search(p, text, re.MULTILINE)]
    assert not missing, (missing, text[-3000:])
    assert (images > 0) == figure, images
