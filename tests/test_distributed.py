"""Data parallelism on a CPU: two processes (gloo) with batch b each train as one with batch 2b.

Also sharded (FSDP, full fine-tuning): the same losses, and a resumed run equal to a whole one.

`torchrun --nproc_per_node 2` runs tests/distributed_worker.py; each process takes half of
every batch and the gradients are summed, so the per-step losses must equal the one-process
run's with twice the batch. Tolerance TRAINING_LOSS_ATOL (1e-5): the two halves' gradients are
added in another order than one batch's rows are; the largest difference measured over the 10
steps was 1.2e-7 (float32, ATEN_CPU_CAPABILITY=default, avx2 and avx512). The final weights'
checksum (the sum of |w| over the trained weights) differed by at most 6e-8 of itself (full
fine-tuning, FSDP); its tolerance is DISTRIBUTED_WEIGHTS_RTOL (1e-6) of itself.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import torch
from peft_course.tolerances import DISTRIBUTED_WEIGHTS_RTOL, TRAINING_LOSS_ATOL

WORKER = Path(__file__).with_name("distributed_worker.py")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def one_process_reference(out: Path, batch_size: int) -> dict:
    """The worker's runs in this process (no launcher: world size 1), on one thread as the
    workers run."""
    spec = importlib.util.spec_from_file_location("distributed_worker", WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return worker.report(out, batch_size)
    finally:
        torch.set_num_threads(threads)


def launch(out: Path, processes: int, batch_size: int) -> subprocess.Popen:
    """Start `torchrun --nproc_per_node processes` of the worker, each process on one thread."""
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    prefix = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(processes),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
    ]
    command = prefix + [str(WORKER), str(out), "--batch-size", str(batch_size)]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )


def finish(process: subprocess.Popen, timeout: int = 120) -> tuple[int, str]:
    """Wait for a `launch`; on a timeout, kill the launcher and every worker it started."""
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate()
        stderr += f"\ntimed out after {timeout} s"
    return process.returncode, stderr


def test_two_processes_train_as_one_with_twice_the_batch(tmp_path):
    two = launch(tmp_path / "two", 2, 4)
    try:
        reference = one_process_reference(tmp_path / "one", 8)  # while the two processes start
    finally:
        returncode, stderr = finish(two)
    assert returncode == 0, stderr[-3000:]
    ranks = [json.loads((tmp_path / "two" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert reference["world"] == 1 and [r["world"] for r in ranks] == [2, 2]
    for run in ("whole", "grouped", "full"):
        expected = reference[run]["losses"]
        assert len(expected) == 10, "40 rows in batches of 8 for 2 epochs are 10 steps"
        for rank, report in enumerate(ranks):
            got = report[run]["losses"]
            assert (
                len(got) == 10
                and max(abs(a - b) for a, b in zip(expected, got)) < TRAINING_LOSS_ATOL
            ), (
                run,
                rank,
                expected,
                got,
            )
            assert (
                abs(report[run]["weights"] - reference[run]["weights"])
                < DISTRIBUTED_WEIGHTS_RTOL * reference[run]["weights"]
            ), (run, rank)
    assert all(report["full_resumed"]["losses"] == report["full"]["losses"] for report in ranks), (
        "resuming a sharded (FSDP) run changed it"
    )
    epochs = 2 + 2 + 2 + 1 + 1
    assert ranks[0]["saves"] == 4 * epochs and ranks[1]["saves"] == 0, (
        "only rank 0 writes checkpoints"
    )


def test_only_rank_0_writes_the_run_and_prints(tmp_path, monkeypatch, capsys):
    """Another rank (here: RANK=1 of a one-process group) trains as rank 0 does but writes
    nothing."""
    from peft_course.cli import main

    monkeypatch.setenv("RANK", "1")
    output = tmp_path / "run"
    assert (
        main(
            [
                "finetune",
                "--method",
                "head",
                "--epochs",
                "1",
                "--max-examples",
                "40",
                "--output",
                str(output),
                "--max-tokens-per-batch",
                "64",
                "--no-progress",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == "", "a rank other than 0 printed"
    assert not output.exists() or not any(output.rglob("*")), "a rank other than 0 wrote files"
    monkeypatch.setenv("RANK", "0")
    assert (
        main(
            [
                "finetune",
                "--method",
                "head",
                "--epochs",
                "1",
                "--max-examples",
                "40",
                "--output",
                str(output),
                "--max-tokens-per-batch",
                "64",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (output / "metrics.json").is_file() and "saved:" in capsys.readouterr().out
