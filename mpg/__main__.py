"""`python -m mpg` is the `mpg` command."""

from .cli import main

raise SystemExit(main())
