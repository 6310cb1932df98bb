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
