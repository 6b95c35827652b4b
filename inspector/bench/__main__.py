"""``python -m inspector.bench``: the same as ``stable-inspect bench``."""

import sys

from inspector.bench.command import main

if __name__ == "__main__":
    sys.exit(main())
