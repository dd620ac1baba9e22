"""`make test-matrix`: the migration-facing tests (marker `matrix`) on every tested major,
each on the backend that provides it (tests/servers.py), one line per major: major, server,
tests passed, time. Exits non-zero when any major fails; its pytest output is printed then.

    python -m tests.matrix [MAJOR ...] [-- PYTEST_ARGS ...]   # default: every tested major, -n 2
"""

import os
import re
import subprocess
import sys
import time

from media_db.deploy.project import TESTED_MAJORS
from tests.helpers import BIN, REPO_ROOT
from tests.servers import BACKEND_OF_MAJOR

# Whatever the caller's shell chose, each major picks its own backend from TEST_PG_MAJOR.
CHOOSERS = ("TEST_DB_BACKEND", "TEST_DATABASE_URL", "TEST_POSTGRES_IMAGE")
HEADER = re.compile(r"^database backend: (.*)$", re.MULTILINE)
# pytest's closing line: "==== 61 passed in 80.21s (0:01:20) ====" (or "N failed, M passed").
SUMMARY = re.compile(r"^=+ (.*?) in [\d.]+s.* =+$", re.MULTILINE)


def run_major(major: int, pytest_args: list[str]) -> tuple[bool, str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CHOOSERS}
    env["TEST_PG_MAJOR"] = str(major)
    started = time.monotonic()
    result = subprocess.run(
        [str(BIN / "pytest"), "-m", "matrix", *pytest_args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.monotonic() - started
    output = result.stdout + result.stderr
    header, summary = HEADER.search(output), SUMMARY.findall(output)
    counts = summary[-1] if summary else "no pytest summary"
    line = (
        f"PostgreSQL {major}: {counts} in {seconds:.0f} s "
        f"({header.group(1) if header else 'no server'})"
    )
    return result.returncode == 0, line, output


def build_images(majors: list[int]) -> None:
    for major in majors:
        if BACKEND_OF_MAJOR[major] == "docker":
            subprocess.run(
                [str(REPO_ROOT / "scripts" / "test-image.sh")],
                env={**os.environ, "PG": str(major)},
                check=True,
            )


def main(argv: list[str]) -> int:
    split = argv.index("--") if "--" in argv else len(argv)
    if not all(arg.isascii() and arg.isdigit() for arg in argv[:split]):
        print(f'MAJORS={" ".join(argv[:split])!r}: give majors as numbers, e.g. MAJORS="13 17"')
        return 2
    majors = [int(arg) for arg in argv[:split]] or list(TESTED_MAJORS)
    pytest_args = argv[split + 1 :] or ["-n", "2"]
    unknown = set(majors) - set(TESTED_MAJORS)
    if unknown:
        print(f"not a tested major: {sorted(unknown)}; use {TESTED_MAJORS}", file=sys.stderr)
        return 2
    build_images(majors)
    lines, failed = [], []
    for major in majors:
        ok, line, output = run_major(major, pytest_args)
        if not ok:
            print(output)
            failed.append(major)
            line = f"FAILED {line}"
        print(line, flush=True)
        lines.append(line)
    print("\nmigration tests per major:")
    print("\n".join(f"  {line}" for line in lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
