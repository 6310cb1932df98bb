"""Every results page of the docs, remade by one command, each saying what produced it.

    python -m peft_course.reports                 # every page (about 10 CPU minutes)
    python -m peft_course.reports demo ablation   # only some

A page is the Markdown a chapter function writes, followed by one line from
`peft_course.system.provenance`: the command, the CPU's kernel set and the library versions.
Figures trained on a CPU are reproduced exactly only under the same kernel set; the tests
compare a fresh run with these pages within the spread measured across kernel sets
(`benchmarks/cpu_spread.py`, `docs/results/cpu-spread.md`).
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable
from pathlib import Path

from peft_course.ablation import QUICK, Settings, prompt_sweep, rank_sweep, run_sweep, write_sweep
from peft_course.data import load_classification_data
from peft_course.demo import ablation_results, demo_rows
from peft_course.system import provenance
from peft_course.tables import write_table

RESULTS, IMAGES = Path("docs/results"), Path("docs/images")
COMMAND = "python -m peft_course.reports"


def stamp(path: Path, command: str) -> Path:
    """End the page at `path` with its provenance line, replacing an older one."""
    lines = [line for line in path.read_text().rstrip("\n").splitlines() if not line.startswith("*Made by `")]
    while lines and not lines[-1].strip():
        lines.pop()
    path.write_text("\n".join(lines) + "\n\n" + provenance(command) + "\n")
    return path


def demo_pages(results: Path = RESULTS, images: Path = IMAGES) -> list[Path]:
    """`demo.md` and `ablation-{rank,alpha,prompt}.md` (+ plots): what `peft-course demo` prints."""
    data = load_classification_data("synthetic-sentiment")
    pages = [write_table(demo_rows(data, progress=False), results, "demo")]
    quick = load_classification_data("synthetic-sentiment", max_examples=QUICK["max_examples"])
    scratch = results / ".ablation"
    for result in ablation_results(quick, output=scratch, progress=False):
        name = result.sweep.name
        shutil.move(scratch / f"{name}.md", results / f"ablation-{name}.md")
        (images / "ablation").mkdir(parents=True, exist_ok=True)
        shutil.move(scratch / f"{name}-val-loss.png", images / "ablation" / f"{name}-val-loss.png")
        pages.append(results / f"ablation-{name}.md")
    shutil.rmtree(scratch, ignore_errors=True)
    (results / "demo.csv").unlink(missing_ok=True)
    return [stamp(page, "peft-course demo") for page in pages]


def ablation_pages(results: Path = RESULTS) -> list[Path]:
    """`ablation-seeds-rank.md` and `ablation-seeds-prompt.md`: the quick tables over seeds 0, 1, 2.

    The spread across seeds says which differences between cells are effects: a gap between
    two cells larger than both cells' standard deviations.
    """
    scratch = results / ".cells"
    quick = load_classification_data("synthetic-sentiment", max_examples=QUICK["max_examples"])
    settings = Settings(epochs=QUICK["epochs"], progress=False)
    pages = []
    for sweep in (rank_sweep(), prompt_sweep()):
        result = run_sweep(sweep, quick, settings, (0, 1, 2), scratch)
        stem = f"ablation-seeds-{sweep.name}"
        written = write_sweep(result, scratch, stem)
        shutil.move(written[0], results / f"{stem}.md")
        pages.append(stamp(results / f"{stem}.md", f"peft-course ablate {sweep.name} --quick --seeds 0 1 2"))
    shutil.rmtree(scratch, ignore_errors=True)
    return pages


def other_pages(results: Path = RESULTS, images: Path = IMAGES) -> dict[str, Callable[[], list[Path]]]:
    """The chapters that write their own pages: prompting, LoRA, QLoRA, DPO."""
    from peft_course.dpo import make_figures
    from peft_course.lora import equivalence_rows, training_rows
    from peft_course.tables import COLUMNS, markdown_table
    from peft_course.prompting import write_results_page
    from peft_course.qlora import write_results

    def lora() -> list[Path]:
        """The LoRA chapter's equality-with-peft table and its training table (no seconds)."""
        equivalence, training = results / "lora-equivalence.md", results / "lora-training.md"
        equivalence.write_text(markdown_table(equivalence_rows()))
        rows = training_rows(load_classification_data("synthetic-sentiment"))
        training.write_text(markdown_table(rows, tuple(c for c in COLUMNS if c != "seconds")))
        return [equivalence, training]

    return {
        "prompting": lambda: write_results_page(results),
        "lora": lora,
        "qlora": lambda: write_results(results),
        "dpo": lambda: [p for p in make_figures(images / "dpo") if p.suffix == ".md"],
    }


def regenerate(names: list[str] | None = None) -> list[Path]:
    """Remake the named groups of pages (all by default) and stamp each with its provenance."""
    groups: dict[str, Callable[[], list[Path]]] = {"demo": demo_pages, "ablation": ablation_pages}
    groups.update(other_pages())
    unknown = set(names or ()) - set(groups)
    if unknown:
        raise SystemExit(f"unknown page group(s) {sorted(unknown)}; choose from {', '.join(groups)}")
    written = []
    for name in names or list(groups):
        pages = groups[name]()
        command = f"{COMMAND} {name}"
        written += [page if name in ("demo", "ablation") else stamp(page, command) for page in pages]
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Remake the docs' results pages.")
    parser.add_argument("groups", nargs="*", help="demo, ablation, prompting, lora, qlora, dpo (default: all)")
    for path in regenerate(parser.parse_args().groups):
        print(f"saved {path}")
