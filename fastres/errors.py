"""The one exception type for user-facing errors.

The CLI catches FastresError, prints `fastres: error: <message>` as one line on stderr and
exits with status 2. Raise it for anything a user can fix (bad flag, missing or corrupt data,
CUDA unavailable, out of memory); let programming errors raise normally. Parser gives bad
flags the same one line (the CLI's and the bench/ scripts').
"""
import argparse


class FastresError(Exception):
    exit_code = 2


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one line, `NAME: error: MESSAGE (see PROG --help)`
    (not argparse's usage block before it), and exits 2. NAME is the program's first word, so a
    subcommand's parser (prog `fastres train`) still says `fastres: error:`."""

    def error(self, message):
        self.exit(2, f"{self.prog.split()[0]}: error: {message} (see {self.prog} --help)\n")
