import sys

try:
    from fastres.cli import main
except ValueError as e:
    # A bad FASTRES_BN_TUNING or FASTRES_BN_OP is read when the kernels load, before main() can
    # catch it: one line and status 2, like every other error a user can fix.
    if not str(e).startswith("FASTRES_"):
        raise
    print(f"fastres: error: {e}", file=sys.stderr)
    raise SystemExit(2)

raise SystemExit(main())
