"""The command line: help everywhere, info works, bad input is one clear line."""

from __future__ import annotations

import pytest

from peft_course.cli import build_parser, main


def subcommands() -> list[str]:
    parser = build_parser()
    return sorted(parser._subparsers._group_actions[0].choices)


@pytest.mark.parametrize("command", subcommands())
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: peft-course" in capsys.readouterr().out


def test_info_reports_versions_and_4bit_support(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "transformers" in out and "4-bit (bitsandbytes)" in out


def test_unknown_dataset_is_one_line_not_a_traceback(capsys):
    assert main(["demo", "--dataset", "imbd", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "error: unknown dataset 'imbd'" in err and "Traceback" not in err


def test_only_user_errors_become_one_line(monkeypatch, capsys):
    """`CourseError` is the user's mistake (one line, code 2); anything else is a bug and keeps
    its traceback."""
    import peft_course.commands as commands
    from peft_course.errors import CourseError

    def raising(error):
        def handler(args):
            raise error

        return handler

    monkeypatch.setattr(commands, "command_info", raising(CourseError("first line\n  second line")))
    assert main(["info"]) == 2
    assert capsys.readouterr().err == "peft-course info: error: first line second line\n"
    for bug in (ValueError("a bug"), KeyError("score.weight"), TypeError("a bug")):
        monkeypatch.setattr(commands, "command_info", raising(bug))
        with pytest.raises(type(bug)):
            main(["info"])


def test_ctrl_c_during_ablate_says_that_rerunning_continues(monkeypatch, tmp_path, capsys):
    import peft_course.ablation as ablation

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ablation, "run_cell", interrupted)
    assert (
        main(
            [
                "ablate",
                "rank",
                "--values",
                "2",
                "--no-full",
                "--max-examples",
                "24",
                "--epochs",
                "1",
                "--output",
                str(tmp_path),
                "--no-progress",
            ]
        )
        == 130
    )
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        last.startswith("peft-course ablate: interrupted; finished cells are kept in")
        and "rerun the same" in last
    )


def test_the_command_line_silences_the_kernels_line_and_future_warnings(caplog):
    """bitsandbytes logs a line about an optional kernel package at every import on an
    AVX512-BF16 CPU; libraries warn about their own future. The CLI drops both (a learner's
    own scripts keep them: nothing is silenced at import)."""
    import logging
    import warnings

    from peft_course.system import KERNELS_LINE, quiet_library_noise

    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    earlier, logger.filters = logger.filters, []  # an earlier main() in this process added one
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger.warning(KERNELS_LINE + ": No module named 'kernels'")
        assert KERNELS_LINE in caplog.text  # before: a learner's script sees it
        caplog.clear()
        quiet_library_noise()
        logger.warning(KERNELS_LINE + ": No module named 'kernels'")
        warnings.warn("the argument will be removed", FutureWarning, stacklevel=1)
    logger.filters = earlier
    assert KERNELS_LINE not in caplog.text
    assert not [w for w in caught if issubclass(w.category, FutureWarning)]
