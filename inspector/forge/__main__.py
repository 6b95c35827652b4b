"""``python -m inspector.forge samples|big ...``: the forge's command line (see ``inspector.forge``)."""

import sys

from inspector.forge import main

if __name__ == "__main__":
    sys.exit(main())
