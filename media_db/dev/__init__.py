"""What only developers run, from a checkout: the embedded PostgreSQL, the records and diagram
generators, the SQL linter. Not in the wheel; the API and deploys never import it."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
