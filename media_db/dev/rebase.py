"""`make rebase`: this branch's revisions put on top of the other branch's head.

Two branches that each ran `make revision` meet with two heads, and often with two files of the
same id (media_db/deploy/history_shape.py refuses both). Once the other branch is merged in (or
this one rebased onto it with git), this renumbers the revisions this branch added, in their
order, after the other branch's head: file name, `revision`, `down_revision` and the docstring's
`Revision ID:`/`Revises:` lines. Then the records and the diagram are written again, as `make
revision` does. Which revisions are this branch's is git's answer: those its commits since ONTO
added, and new files not committed yet. A database that ran this branch's old numbers must be
downgraded below them first: their ids change.
"""

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from media_db.deploy import history_shape, project
from media_db.dev import regenerate

DOWN_LINE = re.compile(r"^(down_revision(?:: [^=]+)? = )[\"']([^\"']+)[\"']", re.M)
FILE_NAME = re.compile(r"^(\d{4}_\d{2}_\d{2}_)([0-9a-f]+)(_.*\.py)$")


@dataclass
class Revision:
    path: Path
    id: str
    down: str | None


def read(path: Path) -> Revision:
    text = path.read_text()
    found, down = history_shape.REVISION_LINE.search(text), DOWN_LINE.search(text)
    if found is None:
        raise SystemExit(f"make rebase: {path.name} has no `revision = ...` line")
    return Revision(path, found[1], down[2] if down else None)


def git(*args: str) -> list[str]:
    done = subprocess.run(
        ["git", *args], cwd=project.folder(), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"make rebase: git {' '.join(args)} failed: {done.stderr.strip()}")
    return [line for line in done.stdout.splitlines() if line]


def ours(versions: Path, onto: str) -> set[Path]:
    """The revision files this branch added since `onto`, committed or not."""
    top = project.folder()
    relative = str(versions.relative_to(top))
    added = git("log", f"{onto}..HEAD", "--diff-filter=A", "--name-only", "--format=", relative)
    untracked = git("ls-files", "--others", "--exclude-standard", relative)
    return {top / name for name in [*added, *untracked] if name.endswith(".py")}


def in_order(revisions: list[Revision]) -> list[Revision]:
    """`revisions` as one chain, from the one whose down_revision is not among them."""
    by_down = {revision.down: revision for revision in revisions}
    ids = {revision.id for revision in revisions}
    firsts = [revision for revision in revisions if revision.down not in ids]
    if len(firsts) != 1 or len(by_down) != len(revisions):
        names = ", ".join(revision.path.name for revision in revisions)
        raise SystemExit(f"make rebase: {names} are not one chain: join them by hand")
    chain = firsts
    while (following := by_down.get(chain[-1].id)) is not None:
        chain.append(following)
    return chain


def renumbered(revision: Revision, new_id: str, down: str) -> Path:
    text = revision.path.read_text()
    text = history_shape.REVISION_LINE.sub(f'revision: str = "{new_id}"', text, count=1)
    text = DOWN_LINE.sub(rf'\g<1>"{down}"', text, count=1)
    text = re.sub(r"^Revision ID: .*$", f"Revision ID: {new_id}", text, count=1, flags=re.M)
    text = re.sub(r"^Revises: .*$", f"Revises: {down}", text, count=1, flags=re.M)
    name = FILE_NAME.fullmatch(revision.path.name)
    target = revision.path.with_name(f"{name[1]}{new_id}{name[3]}" if name else revision.path.name)
    revision.path.write_text(text)
    revision.path.rename(target)
    return target


def main(argv: list[str]) -> int:
    onto = argv[1] if len(argv) > 1 and argv[1] else "main"
    versions = project.folder() / "alembic" / "versions"
    mine = ours(versions, onto)
    everything = [read(path) for path in sorted(versions.glob("*.py"))]
    theirs = [revision for revision in everything if revision.path not in mine]
    branch = [revision for revision in everything if revision.path in mine]
    if not branch:
        print(f"make rebase: this branch added no revision since {onto}: nothing to do")
        return 0
    head = in_order(theirs)[-1].id
    if not head.isdigit():
        raise SystemExit(f"make rebase: {onto}'s head {head} is not a number to count on from")
    down = head
    for number, revision in enumerate(in_order(branch), start=int(head) + 1):
        new_id = f"{number:0{len(head)}d}"
        target = renumbered(revision, new_id, down)
        print(f"{revision.id} -> {new_id} ({target.name}), on top of {down}")
        down = new_id
    print(
        "A database that ran this branch's old revision ids must be downgraded below them "
        "before it upgrades to these."
    )
    return regenerate.main()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
