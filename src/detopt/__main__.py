from detopt.cli import main

raise SystemExit(main())
