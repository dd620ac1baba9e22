"""One head, and one file per revision id: what `make status` and `make verify` refuse otherwise.

Two branches that each ran `make revision` leave main with two heads, and often with two files
of the same id (both numbered the next one). Alembic then loads only one of those files, with a
warning, and a deploy would miss the other's changes. The files are read here, not Alembic's
map, so that both are named.
"""

import re
from collections import defaultdict
from pathlib import Path

from alembic.script import ScriptDirectory

REVISION_LINE = re.compile(r"^revision(?:: str)? = [\"']([^\"']+)[\"']", re.M)


def problems(script: ScriptDirectory) -> list[str]:
    """One line per problem, each saying how to fix it; [] when the history is one line."""
    found = []
    files: defaultdict[str, list[str]] = defaultdict(list)
    for path in sorted(Path(script.versions).glob("*.py")):
        if match := REVISION_LINE.search(path.read_text()):
            files[match[1]].append(path.name)
    for revision, names in sorted(files.items()):
        if len(names) > 1:
            found.append(
                f"revision {revision} is in {len(names)} files ({', '.join(names)}), and Alembic "
                "loads only one: on the later branch, with the other merged in, `make rebase` "
                "gives its revisions the next free ids"
            )
    heads = sorted(script.get_heads())
    if len(heads) > 1:
        found.append(
            f"{len(heads)} heads ({', '.join(heads)}): two branches each added a revision; on "
            "the later branch, with the other merged in, `make rebase` puts its revisions on "
            "top of the other's (or join them with "
            f'`.venv/bin/alembic merge -m "merge" {" ".join(heads)}`)'
        )
    return found
