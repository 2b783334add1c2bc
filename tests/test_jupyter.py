"""Jupyter: examples/explore.ipynb runs from top to bottom (nbclient, headless, offline)."""
import json
import os
import sys

import pytest

_EXTRA = "pip install 'kimberlite-storage[notebook,pandas,arrow,sql]'"
nbclient = pytest.importorskip("nbclient", reason=_EXTRA)
nbformat = pytest.importorskip("nbformat", reason=_EXTRA)
pytest.importorskip("ipykernel", reason=_EXTRA)   # the kernel the notebook runs in
pytest.importorskip("matplotlib", reason=_EXTRA)  # the notebook plots
pytest.importorskip("pandas", reason=_EXTRA)      # ... and shows a data frame
pytest.importorskip("duckdb", reason=_EXTRA)      # ... queries a stream with DuckDB
pytest.importorskip("polars", reason=_EXTRA)      # ... and Polars

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "examples", "explore.ipynb")


@pytest.mark.slow
def test_notebook_runs(tmp_path, monkeypatch):
    # A kernel spec for this very interpreter, so that the notebook runs against the
    # kimberlite under test whatever kernels the machine has installed.
    spec = tmp_path / "jupyter" / "kernels" / "kimberlite-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "kimberlite tests", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))

    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.metadata.kernelspec.name == "python3"
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="kimberlite-test",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = [o.data["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("kimberlite.Storage" in h and "3 streams" in h for h in html)  # the store
    assert any("kimberlite.Stream 1" in h for h in html)                     # the view
    assert any("kimberlite.Record" in h for h in html)                       # a record
    assert any("<table" in h and "prev_hash" in h for h in html)             # the frame
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "2000 events" in text
    assert "duckdb: 20 buckets of 100 events" in text  # the DuckDB + Polars section
    assert "polars:" in text and "events over 180 bytes" in text
    assert "detected:" in text  # the tampering was caught
