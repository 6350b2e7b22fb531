"""``python -m tokensvc``: the same as the ``tokensvc`` console script."""

from tokensvc.cli import main

raise SystemExit(main())
