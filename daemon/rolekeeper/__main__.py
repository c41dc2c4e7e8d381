from rolekeeper.cli import main

raise SystemExit(main())
