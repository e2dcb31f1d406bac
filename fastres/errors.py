"""The one exception type for user-facing errors.

The CLI catches FastresError, prints `fastres: error: <message>` as one line on stderr and
exits with status 2. Raise it for anything a user can fix (bad flag, missing or corrupt data,
CUDA unavailable, out of memory); let programming errors raise normally.
"""


class FastresError(Exception):
    exit_code = 2
