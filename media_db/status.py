"""Backward-compatibility shim: `python -m media_db.status` keeps working.

Canonical: media_db.deploy.status.
"""

import sys

from media_db.deploy.status import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
