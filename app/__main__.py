"""`python -m app` runs the `docgen` command."""
from app.cli import main

raise SystemExit(main())
