"""Backward-compatibility shim: `python -m media_db.local_server` keeps working.

Canonical: media_db.dev.local_server.
"""

import sys

from media_db.dev.local_server import main

if __name__ == "__main__":
    main(sys.argv[1:])
