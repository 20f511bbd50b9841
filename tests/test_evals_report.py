"""Results folder naming, the markdown + JSON report, and a plot file."""
import datetime as dt
import json
import math

from evals import report


def test_results_dir_is_date_and_short_host(tmp_path):
    path = report.results_dir(tmp_path, dt.date(2025, 3, 7), "box7.example.org")
    assert path == tmp_path / "2025-03-07-box7" and path.is_dir()


def test_out_names_the_folder_itself(tmp_path):
    assert report.output_dir(str(tmp_path / "run-a")) == tmp_path / "run-a"
    assert (tmp_path / "run-a").is_dir()


def test_markdown_table_and_cells():
    text = report.markdown_table(["a", "b"], [["1", "2"], ["x", "y"]])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | 2 |", "| x | y |"]
    assert report.fmt(None) == "-" and report.fmt(math.nan) == "-"
    assert report.fmt(3.14159, 2) == "3.14" and report.fmt(7) == "7"


def test_write_report_records_machine_beside_numbers(tmp_path):
    machine = report.machine_info({"dtype": "float32", "max_tokens": 64})
    for key in ("cpu", "cpu_cores", "torch", "transformers", "dtype", "max_tokens", "torch_threads"):
        assert key in machine
    fig, axes = report.new_figure(1, 1)
    axes[0][0].bar(["a"], [1.0])
    png = report.save_plot(fig, tmp_path, "x.png")
    md = report.write_report(tmp_path, "bench", "Title", machine, [("mtbench", "| a |\n|---|\n| 1 |")],
                             ["a note"], {"rows": [{"v": math.nan}]}, [png])
    text = md.read_text()
    assert "# Title" in text and "- dtype: float32" in text and "## mtbench" in text
    assert "- a note" in text and "![x.png](x.png)" in text
    raw = json.loads((tmp_path / "bench.json").read_text())
    assert raw["machine"]["max_tokens"] == 64 and raw["notes"] == ["a note"]
    assert raw["rows"] == [{"v": None}]  # strict JSON: NaN becomes null
    assert (tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"
