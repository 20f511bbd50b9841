"""Where results go and what they record.

Each command writes into evals/results/<YYYY-MM-DD>-<host>/:
  <bench>.md    the tables as printed, with the machine and settings above them
  <bench>.json  the raw numbers (every request's timings), for re-plotting
  <bench>_*.png plots
A number without its machine is not a result, so the machine block is
written beside every table.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

RESULTS_ROOT = Path(__file__).resolve().parent / "results"


def results_dir(root: Path = RESULTS_ROOT, today: dt.date | None = None, host: str | None = None) -> Path:
    today = today or dt.date.today()
    host = (host or socket.gethostname()).split(".")[0] or "host"
    path = Path(root) / f"{today.isoformat()}-{host}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def output_dir(out: str | None) -> Path:
    """--out names the results folder itself; without it, the dated default."""
    if out is None:
        return results_dir()
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).resolve().parent, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _llamacpp_build() -> str | None:
    """Which build of llama.cpp the llama.cpp rows ran (written by evals/install_llamacpp.sh:
    native ISA, or explicit flags without AMX on CPUs where the native build crashes)."""
    path = Path(__file__).resolve().parent / ".llamacpp_build"
    return path.read_text().strip() if path.exists() else None


def _cpu_flags() -> str:
    """The ISA extensions that decide kernel choices here (bf16 / VNNI / AMX)."""
    try:
        flags = set(open("/proc/cpuinfo").read().split("flags", 1)[1].split("\n", 1)[0].split())
    except (OSError, IndexError):
        return "?"
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")
    return " ".join(f for f in wanted if f in flags)


def machine_info(settings: dict) -> dict:
    """The machine, software and run settings, recorded beside every number."""
    import torch
    return {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        # Other processes on the box skew every row; the load says how much.
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "llama_cpp_python": _version("llama_cpp_python"),
        "llama_cpp_build": _llamacpp_build(),
        "cpu_flags_of_note": _cpu_flags(),
        "specdec_commit": _git_commit(),
        **settings,
    }


def fmt(value, digits: int = 1) -> str:
    """Table cell: '-' for missing / NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    assert all(len(r) == len(headers) for r in rows), "every row needs one cell per header"
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_block(machine: dict) -> str:
    return "\n".join(f"- {k}: {v}" for k, v in machine.items())


def write_report(out_dir: Path, bench: str, title: str, machine: dict, sections: list[tuple[str, str]],
                 notes: list[str], raw: dict, plots: list[str]) -> Path:
    """Write <bench>.md and <bench>.json; returns the markdown path.

    sections: (heading, markdown body) pairs, usually one table per workload.
    plots: PNG file names already saved in out_dir.
    """
    parts = [f"# {title}", "", "## Machine and settings", "", machine_block(machine), ""]
    for heading, body in sections:
        parts += [f"## {heading}", "", body, ""]
    if notes:
        parts += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    for name in plots:
        parts += [f"![{name}]({name})", ""]
    md_path = Path(out_dir) / f"{bench}.md"
    md_path.write_text("\n".join(parts))
    (Path(out_dir) / f"{bench}.json").write_text(
        json.dumps(_strict_json({"machine": machine, "notes": notes, **raw}), indent=1))
    return md_path


def _strict_json(obj):
    """NaN -> null: json.dumps would write NaN, which jq and browsers reject."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict_json(v) for v in obj]
    return obj


def new_figure(nrows: int = 1, ncols: int = 1, **kw):
    """A matplotlib figure on the Agg backend (no display on benchmark machines)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt.subplots(nrows, ncols, squeeze=False, **kw)


def save_plot(fig, out_dir: Path, name: str) -> str:
    import matplotlib.pyplot as plt
    fig.tight_layout()
    fig.savefig(Path(out_dir) / name, dpi=110)
    plt.close(fig)
    return name
