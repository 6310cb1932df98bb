"""What each chapter's "Use it from a script" example prints, run as a learner runs it.

The site shows it under the example (the page's fence names the file: `output="..."`, filled by
tools/docs_hooks.py), so the printed figures beside the code come from a run, never typed.
tests/test_docs_examples.py runs the examples again and checks that each stored output still
holds the lines that are the same on every machine.

    python tools/example_outputs.py            # every example, into docs/examples/output/
    python tools/example_outputs.py lora gpt2  # some of them
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
OUTPUT = EXAMPLES / "output"


def run(chapter: str) -> Path:
    """Run `docs/examples/<chapter>.py` offline and store what it printed."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    environment["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{chapter}.py")],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"docs/examples/{chapter}.py failed:\n{done.stderr[-2000:]}")
    OUTPUT.mkdir(exist_ok=True)
    path = OUTPUT / f"{chapter}.txt"
    path.write_text(done.stdout)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="*", help="the examples to run; all by default")
    chapters = parser.parse_args().chapters or sorted(p.stem for p in EXAMPLES.glob("*.py"))
    for chapter in chapters:
        print(f"wrote {run(chapter).relative_to(ROOT)}")


if __name__ == "__main__":
    main()
