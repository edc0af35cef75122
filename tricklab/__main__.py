"""``python -m tricklab`` is the ``tricklab`` command."""

from tricklab.cli.main import main

raise SystemExit(main())
