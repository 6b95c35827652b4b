"""``python -m inspector`` is the ``stable-inspect`` command."""

import sys

from inspector.cli import main

sys.exit(main())
