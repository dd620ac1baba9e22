"""`make bench` at its tiny size, so it cannot rot: it runs end to end on real PostgreSQL,
writes its JSON, and every row carries a measurement (no figure is judged here: the bench
reports, the suite never times anything)."""

import ast
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import make_url

from bench.graphile_peer import HERE as GRAPHILE
from bench.run import SIZES, run_and_report
from bench.transitions_under_load import KINDS
from media_db.dev import REPO_ROOT
from tests import topologies
from tests.servers import DatabaseServer


def test_tiny_bench_writes_a_complete_report(
    server: DatabaseServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    try:  # the Graphile Worker peer's Node.js, installed on first use like PgBouncer
        for tool in ("node", "npm"):
            topologies.installed(tool, "Debian's nodejs and npm")
    except topologies.MissingComponent as error:
        pytest.fail(str(error), pytrace=False)
    path = asyncio.run(run_and_report(make_url(server.admin_url), SIZES["tiny"], tmp_path))
    report = json.loads(path.read_text())
    assert report["size"]["name"] == "tiny"
    rows = {row["row"].split(",")[0]: row for row in report["rows"]}
    assert {
        "single-row insert",
        "get by id",
        "pool checkout + SELECT 1",
        "claim",
        "delete one media item (with its jobs) among all jobs",
        "worker loop vs Graphile batched",
        "worker loop vs Graphile unbatched",
        "claim 10 of a key behind 200 jobs of a key at its limit (claims/s)",
    } <= set(rows)
    for row in report["rows"]:
        figures = [v for k, v in row.items() if k.endswith(("_per_s", "_ms", "ratio"))]
        assert figures, row
        assert all(isinstance(v, int | float) and v > 0 for v in figures), row
    assert "Benchmark (tiny)" in capsys.readouterr().out


def test_a_run_of_some_parts_measures_those_parts_alone(
    server: DatabaseServer, tmp_path: Path
) -> None:
    """`make bench ONLY=data`: the data layer's rows, none of the queue's (minutes saved)."""
    path = asyncio.run(
        run_and_report(make_url(server.admin_url), SIZES["tiny"], tmp_path, ("data",))
    )
    report = json.loads(path.read_text())
    assert report["parts"] == ["data"]
    names = [row["row"].split(",")[0] for row in report["rows"]]
    assert len(names) == 5, names
    assert {"single-row insert", "get by id", "pool checkout + SELECT 1"} <= set(names)


def test_an_unknown_part_is_refused_naming_the_parts() -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "data claimz"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2
    assert "no part claimz: the parts are data, peers, limits, claims, health" in refused.stderr


def test_the_graphile_peer_names_what_to_install_when_node_is_missing(tmp_path: Path) -> None:
    """No silent skip: without Node.js the bench stops, saying how to install it."""
    bare = tmp_path / "bin"  # a PATH with the script's own tools but no node nor npm
    bare.mkdir()
    os.symlink("/usr/bin/dirname", bare / "dirname")
    result = subprocess.run(
        ["/bin/bash", str(GRAPHILE / "install.sh")],
        env={"PATH": str(bare)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "apt-get install -y nodejs npm" in result.stderr


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_transition_the_upgrade_bench_makes_still_edits_the_models(kind: str) -> None:
    """`make bench-upgrade` edits processing_jobs' model for each expand/contract kind: each
    edit's anchor is in today's models exactly once, and the edited source still parses. (Its
    run takes minutes even at the tiny size: this keeps its edits from rotting unseen.)"""
    source = (REPO_ROOT / "models" / "media.py").read_text()
    shape = KINDS[kind]
    for anchor, replacement in filter(None, (shape.expand, shape.contract)):
        assert source.count(anchor) == 1, f"{kind}: {anchor!r} is not in the models once"
        source = source.replace(anchor, replacement)
        ast.parse(source)
