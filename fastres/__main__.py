"""`python -m fastres ...` and the `fastres` command (setup.py's console script) both run run()."""
import sys


def run() -> int:
    try:
        from fastres.cli import main
    except ValueError as e:
        # A bad FASTRES_BN_TUNING or FASTRES_BN_OP is read when the kernels load, before main() can
        # catch it: one line and status 2, like every other error a user can fix.
        if not str(e).startswith("FASTRES_"):
            raise
        print(f"fastres: error: {e}", file=sys.stderr)
        return 2
    return main()


if __name__ == "__main__":
    raise SystemExit(run())
