"""Run the labs top to bottom and render each, with its outputs, as a page of the site.

A lab is a jupytext percent script, `labs/<chapter>.py`: it diffs as code, and Jupyter or VS Code
open it as a notebook. This tool reads each one with jupytext, executes it in a fresh kernel with
nbclient (a timeout per cell), and writes `docs/labs/<chapter>.md` (git-ignored): the markdown
cells as they are, each code cell as a Python block followed by what it printed and the figures
it drew (PNG files beside the page). The site shows that page; `make test` runs every lab this
way, so a lab that breaks fails the run with its name, its cell and the error in one line.

    python tools/run_labs.py               # every lab, two at a time
    python tools/run_labs.py lora dpo      # some of them
    python tools/run_labs.py --stale       # only those whose page is missing or older than the lab
"""

from __future__ import annotations

import argparse
import base64
import importlib
import os
import re
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LABS = ROOT / "labs"
PAGES = ROOT / "docs" / "labs"
CELL_MARKER = re.compile(r"^# %%")
OUTPUT = 'text title="Output"'  # a text block (it wraps) under a bar that says what it is
# Labs that need what not every machine has, and the check that says whether this one does
# (`(works, why)`), as the tests skip: without it the lab's page shows its code, not run.
NEEDS = {"qlora": ("peft_course.system", "bnb_4bit_support")}


def cell_lines(script: Path) -> list[int]:
    """The line number of each cell's `# %%` marker, in order (a lab starts with one)."""
    lines = script.read_text().splitlines()
    return [number for number, line in enumerate(lines, 1) if CELL_MARKER.match(line)]


def fence(text: str, language: str) -> str:
    """`text` as a fenced block; a longer fence when the text holds one."""
    ticks = "`" * max(3, max((len(run) + 1 for run in re.findall(r"`{3,}", text)), default=3))
    return f"{ticks}{language}\n{text.rstrip()}\n{ticks}"


def output_blocks(outputs: list, name: str, figure: int, folder: Path) -> tuple[list[str], int]:
    """Markdown for the outputs of one code cell, and the figure count after them.

    What the cell printed becomes one text block (the kernel sends it in pieces), its value
    another; a PNG becomes a file beside the page. What went to stderr (warnings, progress bars)
    is left out: it is not what the lab shows.
    """
    blocks, printed = [], ""
    for output in outputs:
        if output["output_type"] == "stream":
            printed += output["text"] if output["name"] == "stdout" else ""
            continue
        if printed.strip():
            blocks.append(fence(printed, OUTPUT))
        printed = ""
        data = output.get("data", {})
        if "image/png" in data:
            figure += 1
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"figure-{figure}.png").write_bytes(base64.b64decode(data["image/png"]))
            blocks.append(f"![Figure {figure} of the {name} lab]({name}/figure-{figure}.png)")
        elif "text/plain" in data:
            blocks.append(fence(data["text/plain"], OUTPUT))
    if printed.strip():
        blocks.append(fence(printed, OUTPUT))
    return blocks, figure


def render(notebook, name: str, skipped: str = "") -> str:
    """The executed notebook as one Markdown page, with a note on how to open the lab (and,
    with `skipped`, why it was not run here)."""
    folder = PAGES / name
    shutil.rmtree(folder, ignore_errors=True)
    blocks, figure = [], 0
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            blocks.append(cell.source)
            if len(blocks) == 1:  # after the title
                blocks.append(
                    f'!!! note "Run it yourself"\n    This page is `labs/{name}.py` run top to '
                    "bottom (by `make test`). Open the file in Jupyter or VS Code, which read "
                    f"percent scripts, or make a notebook of it: `jupytext --to notebook "
                    f"labs/{name}.py`."
                )
                if skipped:
                    blocks.append(f'!!! warning "Not run here"\n    {skipped}')
        elif cell.cell_type == "code" and cell.source.strip():
            blocks.append(fence(cell.source, "python"))
            more, figure = output_blocks(cell.get("outputs", []), name, figure, folder)
            blocks += more
    return "\n\n".join(blocks) + "\n"


def failed_cell(notebook) -> int | None:
    """The index of the cell that raised (its error output) or timed out (the first not run)."""
    for index, cell in enumerate(notebook.cells):
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            return index
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and cell.source.strip() and cell.execution_count is None:
            return index
    return None


def execute(notebook, timeout: int) -> None:
    """Run every cell in a fresh kernel started from the repository's root.

    The kernel talks over local sockets in a temporary folder (not TCP on localhost, which it
    warns about, nor socket files left in the working directory).
    """
    from nbclient import NotebookClient
    from traitlets.config import Config

    with tempfile.TemporaryDirectory(prefix="lab-kernel-") as sockets:
        local = Config({"KernelManager": {"transport": "ipc", "ip": f"{sockets}/kernel"}})
        client = NotebookClient(
            notebook,
            timeout=timeout,
            kernel_name="python3",
            config=local,
            resources={"metadata": {"path": str(ROOT)}},
        )
        client.execute()


def missing_figures(notebook) -> tuple[int, int]:
    """`(plt.show() calls, PNG figures)` of the executed notebook's code cells."""
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    shown = sum(cell.source.count("plt.show()") for cell in code)
    drawn = sum(
        "image/png" in output.get("data", {}) for cell in code for output in cell.get("outputs", [])
    )
    return shown, drawn


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children: the kernels it ran.

    On a shared machine the wall time says how busy the machine was; this says what the lab
    costs (with one torch thread a kernel, about its wall time on an idle core).
    """
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_has(name: str) -> tuple[bool, str]:
    """Whether this machine has what lab `name` needs (`NEEDS`), and why not if it has not."""
    if name not in NEEDS:
        return True, ""
    module, function = NEEDS[name]
    return getattr(importlib.import_module(module), function)()


def run_lab(name: str, timeout: int, write: bool) -> tuple[str, float, float, str | None, str]:
    """Execute `labs/<name>.py` in a fresh kernel.

    Returns:
        `(name, wall seconds, CPU seconds of its kernel, the error line or None, why it was
        skipped or "")`.
    """
    import jupytext
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    script = LABS / f"{name}.py"
    notebook = jupytext.read(script, fmt="py:percent")
    started = time.perf_counter()
    works, why = machine_has(name)
    if not works:
        if write:
            PAGES.mkdir(parents=True, exist_ok=True)
            (PAGES / f"{name}.md").write_text(render(notebook, name, skipped=why))
        return name, time.perf_counter() - started, 0.0, None, why
    cpu = children_cpu()
    try:
        execute(notebook, timeout)
    except (CellExecutionError, CellTimeoutError) as error:
        seconds = time.perf_counter() - started
        index, lines = failed_cell(notebook), cell_lines(script)
        where = f"line {lines[index]}" if index is not None and index < len(lines) else "a cell"
        if isinstance(error, CellTimeoutError):
            return name, seconds, 0.0, f"the cell at {where} gave no result in {timeout} s", ""
        message = f"{error.ename}: {error.evalue}".strip().splitlines()[0]
        return name, seconds, 0.0, f"the cell at {where} raised {message}", ""
    seconds = time.perf_counter() - started
    cpu = children_cpu() - cpu
    shown, drawn = missing_figures(notebook)
    if drawn < shown:  # a file backend (the package's plots choose Agg) swallowed plt.show()
        return name, seconds, cpu, f"{shown} plt.show() calls drew {drawn} figures", ""
    if write:
        PAGES.mkdir(parents=True, exist_ok=True)
        (PAGES / f"{name}.md").write_text(render(notebook, name))
    return name, seconds, cpu, None, ""


def stale(name: str) -> bool:
    """Whether the lab's page is missing or older than the lab."""
    page = PAGES / f"{name}.md"
    return not page.exists() or page.stat().st_mtime < (LABS / f"{name}.py").stat().st_mtime


def main(argv: list[str] | None = None) -> int:
    """Run the named labs (all by default); 1 with one line per failed lab if any fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("labs", nargs="*", help="lab names (labs/<name>.py); default: all")
    parser.add_argument("--stale", action="store_true", help="only labs whose page is out of date")
    parser.add_argument("--jobs", type=int, default=2, help="labs run at once (default 2)")
    parser.add_argument("--timeout", type=int, default=120, help="seconds a cell may take")
    parser.add_argument("--no-pages", action="store_true", help="run, but write no pages")
    args = parser.parse_args(argv)
    known = sorted(p.stem for p in LABS.glob("*.py"))
    unknown = sorted(set(args.labs) - set(known))
    if unknown:
        print(f"run_labs: error: no lab {', '.join(unknown)} (known: {', '.join(known)})")
        return 2
    names = [n for n in (args.labs or known) if not args.stale or stale(n)]
    # One torch thread a lab, as the tests do: two labs at once share the two cores evenly.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    failures, started = [], time.perf_counter()
    with ProcessPoolExecutor(max(1, args.jobs), mp_context=get_context("spawn")) as pool:
        jobs = [pool.submit(run_lab, n, args.timeout, not args.no_pages) for n in names]
        for job in jobs:
            name, seconds, cpu, error, skipped = job.result()
            verdict = f"FAILED, {error}" if error else f"skipped: {skipped}" if skipped else "ok"
            print(f"labs/{name}.py: {verdict} ({seconds:.1f} s, {cpu:.1f} s of CPU)")
            if error:
                failures.append(name)
    if names:
        print(
            f"{len(names) - len(failures)} of {len(names)} labs ran in "
            f"{time.perf_counter() - started:.0f} s"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
