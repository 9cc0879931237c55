from dinomix_app.cli import main

raise SystemExit(main())
