from fastres.cli import main

raise SystemExit(main())
