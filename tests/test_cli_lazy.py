"""The CLI imports a command's module only when the command is looked up (cold start,
issue 13), and behaves as if every command were imported."""

from __future__ import annotations

import os
import subprocess
import sys

from click.testing import CliRunner

from vucompat.cli import COMMAND_MODULES, load_all_commands, main


def test_the_table_of_command_modules_is_what_the_modules_register():
    load_all_commands()
    assert sorted(main.commands) == sorted(COMMAND_MODULES)
    for name, command in main.commands.items():
        assert command.callback.__module__ == f"vucompat.cli.{COMMAND_MODULES[name]}", name


def test_a_command_imports_its_own_module_only():
    code = ("import sys; from vucompat.cli import main\n"
            "try: main(sys.argv[1:])\nexcept SystemExit: pass\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('vucompat.cli.cmd_'))))")
    for args, modules in ((["list"], "vucompat.cli.cmd_modes"), (["traits", "--help"], "vucompat.cli.cmd_migration"),
                          (["db", "create", "--help"], "vucompat.cli.cmd_registry")):
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60,
                              env={**os.environ})
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-1] == modules, args


def test_help_and_unknown_commands_see_every_command():
    result = CliRunner().invoke(main, ["--help"])
    listed = result.output.split("Commands:\n", 1)[1].split()
    assert result.exit_code == 0 and all(name in listed for name in COMMAND_MODULES)
    # click suggests from the commands it knows: all of them, though none was imported yet
    code = ("import sys; from vucompat.cli import main\n"
            "main(['lis'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "No such command 'lis'. Did you mean 'list'?" in done.stderr
