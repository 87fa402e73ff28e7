from verify_constructions.cli import main

raise SystemExit(main())
