"""sky argument parsing and TaskSpec building (no sockets, no processes)."""

from __future__ import annotations

import shlex

import pytest

from styx_cli.errors import EXIT_USAGE, CliError
from styx_cli.main import build_parser, main
from styx_cli.main import parse as parse_argv
from styx_cli.spec import build_task_spec, command_to_script, parse_envs


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


def test_run_flags_and_command_after_double_dash() -> None:
    args = parse(
        "run",
        "--name",
        "t1",
        "--cpus",
        "2+",
        "--memory",
        "4",
        "--gpus",
        "A100:8",
        "--priority",
        "5",
        "--detach",
        "--",
        "python",
        "train.py",
        "--cpus",
        "3",
    )
    assert (args.name, args.cpus, args.memory, args.gpus, args.priority, args.detach) == (
        "t1",
        "2+",
        "4",
        ["A100:8"],
        5,
        True,
    )
    # Flags after `--` belong to the command, not to sky.
    assert command_to_script(args.command) == "python train.py --cpus 3"


def test_run_without_double_dash() -> None:
    assert command_to_script(parse("run", "echo", "hi").command) == "echo hi"


def test_single_argument_is_a_script_as_typed() -> None:
    assert command_to_script(["--", "echo a && echo b"]) == "echo a && echo b"


def test_several_arguments_are_quoted_with_shlex_join() -> None:
    argv = ["sh", "-c", "exit 3", "it's", "$HOME"]
    script = command_to_script(["--", *argv])
    assert script == shlex.join(argv)
    assert shlex.split(script) == argv


def test_missing_command_is_a_usage_error() -> None:
    with pytest.raises(CliError) as err:
        command_to_script(["--"])
    assert err.value.exit_code == EXIT_USAGE


def test_build_task_spec_resources() -> None:
    spec = build_task_spec(
        ["echo", "x"], name="n", cpus="4+", memory="16", gpus=["A100:8,H100:4"], priority=3, envs=["A=1", "B=x=y"]
    )
    res = spec.resources
    assert (res.cpus, res.cpus_at_least, res.memory_gib, res.memory_at_least) == (4.0, True, 16.0, False)
    assert [(a.name, a.count) for a in res.accelerators] == [("A100", 8), ("H100", 4)]
    assert (spec.name, spec.priority, spec.run) == ("n", 3, "echo x")
    assert dict(spec.envs) == {"A": "1", "B": "x=y"}


def test_defaults_leave_resources_to_the_server() -> None:
    spec = build_task_spec(["true"])
    assert spec.resources.cpus == 0 and not spec.resources.accelerators and spec.resources.arch == ""


def test_arch_flag_on_run_and_launch() -> None:
    assert build_task_spec(["true"], arch="aarch64").resources.arch == "arm64"
    from styx_cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["run", "--arch", "arm64", "--", "true"]).arch == "arm64"
    assert parser.parse_args(["launch", "--arch", "x86_64", "--dryrun", "t.yaml"]).arch == "x86_64"


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"cpus": "abc"}, "--cpus"),
        ({"memory": "lots"}, "--memory"),
        ({"cpus": "0"}, "--cpus"),
        ({"gpus": ["A100:x"]}, "--gpus"),
        ({"arch": "i386"}, "--arch"),
    ],
)
def test_bad_resource_values_name_the_flag(kwargs: dict, flag: str) -> None:
    with pytest.raises(CliError) as err:
        build_task_spec(["echo"], **kwargs)
    assert err.value.exit_code == EXIT_USAGE
    assert err.value.message.startswith(f"{flag}: ")


def test_env_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FROM_SHELL", "v")
    assert parse_envs(["FROM_SHELL", "K=V"]) == {"FROM_SHELL": "v", "K": "V"}
    monkeypatch.delenv("FROM_SHELL")
    with pytest.raises(CliError):
        parse_envs(["FROM_SHELL"])


def test_cpus_abc_prints_one_line_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--cpus", "abc", "--", "echo", "x"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: --cpus: 'abc' is not a number; use N or N+")


def test_unknown_flag_is_exit_2_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["status", "--bogus"])
    assert exc.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--bogus" in err


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_USAGE
    assert "sky run" not in capsys.readouterr().out  # help goes to stderr


def test_other_subcommands_parse() -> None:
    assert parse("logs", "t-1", "--follow").follow
    assert parse("cancel", "t-1", "j-2").ids == ["t-1", "j-2"]
    st = parse("status", "--json", "--state", "running", "--limit", "5")
    assert (st.json, st.state, st.limit) == (True, ["running"], 5)
    assert parse("local", "down").action == "down"
    with pytest.raises(SystemExit):
        parse("local", "sideways")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from styx import __version__

    assert main(["version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_exec_takes_options_between_the_cluster_and_the_command() -> None:
    """`sky exec CLUSTER --cpus 1 -- CMD` used to fail: "unrecognized arguments: -- CMD"."""
    args = parse_argv(build_parser(), ["exec", "img", "--cpus", "1", "--", "echo", "hi"])
    assert args.cluster == "img" and args.cpus == "1" and args.entrypoint == ["echo", "hi"]
    with pytest.raises(SystemExit) as caught:
        parse_argv(build_parser(), ["exec", "img", "--bogus", "x"])
    assert caught.value.code == EXIT_USAGE
