"""``python -m fastpaca.cli``: the same as the ``fastpaca`` command."""

from ._app import main

raise SystemExit(main())
