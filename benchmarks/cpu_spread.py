"""How much the demo's figures move between CPUs and seeds: the spread behind the tests' margins.

PyTorch chooses its CPU kernels by instruction set, and MKL and oneDNN (the matrix products)
choose theirs too; each sums in its own order, so the same seed trains slightly different
weights on an AVX2 laptop, an AVX-512 server and one with AVX512-BF16. Environment variables
force each library's choice, so one machine can imitate the others:

    python benchmarks/cpu_spread.py                      # 3 kernel sets x seeds 0 1 2, about 30 min
    python benchmarks/cpu_spread.py --seeds 0 --write docs/results

Each setting runs `peft-course demo` in a fresh process. Each kernel set builds its own
tiny-gpt2 (the build is deterministic for a kernel set, not across them). The report gives,
for every figure of the demo table and the three ablation tables, its value under each setting
and seed, the largest difference between kernel sets at one seed (the cross-machine spread:
what a docs table may differ by on another CPU) and between seeds (what a conclusion must
survive).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

from peft_course.tables import markdown_table

# The kernel sets to imitate: (name, environment). "native" is whatever this CPU offers.
KERNEL_SETS = {
    "native": {},
    "avx2": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
    },
    "default": {
        "ATEN_CPU_CAPABILITY": "default",
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
    },
}
ABLATION_COLUMNS = ("verbalizer, last", "verbalizer, best", "strict, last", "strict, best")


def run_demo(kernel_set: str, seed: int, output: Path, threads: int) -> Path:
    """`peft-course demo --seed SEED` under one kernel set, unless its results are already there."""
    directory = output / f"{kernel_set}-seed{seed}"
    if not (directory / "ablation" / "prompt.csv").is_file():
        # each kernel set builds its own tiny-gpt2: the build is the same on any thread count but
        # not under other kernels, so a machine with other instructions starts from other weights
        env = {
            **os.environ,
            **KERNEL_SETS[kernel_set],
            "OMP_NUM_THREADS": str(threads),
            "PEFT_COURSE_CACHE": str(output / f"cache-{kernel_set}"),
        }
        subprocess.run(
            [
                sys.executable,
                "-m",
                "peft_course",
                "demo",
                "--seed",
                str(seed),
                "--output",
                str(directory),
                "--no-progress",
            ],
            env=env,
            check=True,
            capture_output=True,
        )
    return directory


def figures(directory: Path) -> dict[str, float]:
    """Every accuracy of one demo run, keyed `table / row / column`."""
    values = {}
    with open(directory / "results.csv") as handle:
        for row in csv.DictReader(handle):
            values[f"demo / {row['method']} / accuracy"] = float(row["accuracy"])
    for sweep in ("rank", "alpha", "prompt"):
        with open(directory / "ablation" / f"{sweep}.csv") as handle:
            for row in csv.DictReader(handle):
                label = next(iter(row.values()))
                for column in ABLATION_COLUMNS:
                    values[f"{sweep} / {label} / {column}"] = float(row[column].split(" ")[0])
    return values


def spread_rows(
    runs: dict[tuple[str, int], dict[str, float]], seeds: list[int]
) -> list[dict[str, str]]:
    """One row per figure: the value per (kernel set, seed) and the two spreads."""
    rows = []
    for key in next(iter(runs.values())):
        row = {"figure": key}
        for (kernel_set, seed), values in runs.items():
            row[f"{kernel_set} s{seed}"] = f"{values[key]:.4f}"
        across_cpus = max(
            max(runs[(k, s)][key] for k in KERNEL_SETS)
            - min(runs[(k, s)][key] for k in KERNEL_SETS)
            for s in seeds
        )
        across_seeds = max(
            max(runs[(k, s)][key] for s in seeds) - min(runs[(k, s)][key] for s in seeds)
            for k in KERNEL_SETS
        )
        row["max across CPUs"], row["max across seeds"] = (
            f"{across_cpus:.4f}",
            f"{across_seeds:.4f}",
        )
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--output", type=Path, default=Path("runs/cpu-spread"))
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per run (another source of rounding; 1 leaves a core free)",
    )
    parser.add_argument("--write", type=Path, help="also write cpu-spread.md into this directory")
    args = parser.parse_args()
    runs = {}
    for seed in args.seeds:
        for kernel_set in KERNEL_SETS:
            print(f"demo under {kernel_set}, seed {seed} ...", flush=True)
            runs[(kernel_set, seed)] = figures(
                run_demo(kernel_set, seed, args.output, args.threads)
            )
    table = markdown_table(spread_rows(runs, args.seeds))
    print(table)
    if args.write:
        from peft_course.system import provenance

        command = (
            "python benchmarks/cpu_spread.py --seeds "
            f"{' '.join(map(str, args.seeds))} --threads {args.threads}"
        )
        args.write.mkdir(parents=True, exist_ok=True)
        (args.write / "cpu-spread.md").write_text(table + "\n" + provenance(command) + "\n")


if __name__ == "__main__":
    main()
