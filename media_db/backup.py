"""Backward-compatibility shim: `python -m media_db.backup` keeps working.

Canonical: media_db.deploy.backup.
"""

import sys

from media_db.deploy.backup import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
