"""`pytest --cpu-report`: the tests that cost the most CPU, their own and their processes'.

Each test's CPU is user + sys of the pytest process and of the children it waited for
(RUSAGE_SELF + RUSAGE_CHILDREN), over its setup, call and teardown. Python processes started
under it log themselves at exit (a sitecustomize put on PYTHONPATH), so the report also counts
the interpreters each test started (not those killed by a signal, nor those given an environment
without PYTHONPATH). Each xdist worker writes a JSON file; the main process merges
them and prints the 25 costliest tests.
"""

import json
import os
import resource
import shutil
import tempfile
from collections.abc import Generator
from pathlib import Path
from typing import Any, TypedDict

import pytest

TOP = 25
LOG = "MEDIA_DB_CPU_LOG"
SITECUSTOMIZE = f"""\
import os
if os.environ.get({LOG!r}):
    import atexit, json, sys

    def _log():
        t = os.times()
        line = json.dumps({{"argv": sys.argv[:3], "cpu": t.user + t.system}})
        with open(os.environ[{LOG!r}], "a") as f:
            f.write(line + "\\n")

    atexit.register(_log)
"""


class Spent(TypedDict):
    cpu: float  # seconds, user + sys
    pythons: int  # Python processes that ended during the test
    commands: dict[str, float]  # their CPU by command


RESULTS = pytest.StashKey[dict[str, Spent]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cpu-report",
        action="store_true",
        help=f"print the {TOP} tests that cost the most CPU (theirs and their processes')",
    )


FOLDER = "MEDIA_DB_CPU_REPORT"  # the run's folder, which xdist's workers inherit


def folder(config: pytest.Config) -> Path:
    return Path(os.environ[FOLDER])


def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("cpu_report"):
        return
    worker = getattr(config, "workerinput", {}).get("workerid", "main")
    if worker == "main":
        where = Path(tempfile.mkdtemp(prefix="media-db-cpu-"))
        os.environ[FOLDER] = str(where)
        config.add_cleanup(lambda: shutil.rmtree(where, ignore_errors=True))
        (where / "sitecustomize.py").write_text(SITECUSTOMIZE)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(where), os.environ.get("PYTHONPATH")) if p
        )
    os.environ[LOG] = str(folder(config) / f"{worker}.procs")
    config.stash[RESULTS] = {}


def cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def logged(path: str) -> list[dict[str, Any]]:
    try:
        with open(path) as f:
            return [json.loads(line) for line in f]
    except FileNotFoundError:
        return []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    if RESULTS not in item.config.stash:
        yield
        return
    seen = len(logged(os.environ[LOG]))
    start = cpu()
    yield
    spent = cpu() - start
    processes = logged(os.environ[LOG])[seen:]
    commands: dict[str, float] = {}
    for process in processes:
        argv = [Path(process["argv"][0]).name, *process["argv"][1:]] if process["argv"] else []
        name = " ".join(argv)
        commands[name] = commands.get(name, 0.0) + process["cpu"]
    item.config.stash[RESULTS][item.nodeid] = Spent(
        cpu=spent, pythons=len(processes), commands=commands
    )


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if RESULTS in config.stash:
        worker = getattr(config, "workerinput", {}).get("workerid", "main")
        (folder(config) / f"{worker}.json").write_text(json.dumps(config.stash[RESULTS]))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    config = terminalreporter.config
    if RESULTS not in config.stash or hasattr(config, "workerinput"):
        return
    results: dict[str, Spent] = {}
    for path in folder(config).glob("*.json"):
        results.update(json.loads(path.read_text()))
    # Kept for a closer look (each test's commands and their CPU).
    (config.rootpath / ".pytest_cache").mkdir(exist_ok=True)
    (config.rootpath / ".pytest_cache" / "cpu-report.json").write_text(json.dumps(results))
    total = sum(r["cpu"] for r in results.values())
    pythons = sum(r["pythons"] for r in results.values())
    terminalreporter.section(f"CPU: {total:.0f} s in tests, {pythons} Python processes")
    ranked = sorted(results.items(), key=lambda kv: -kv[1]["cpu"])
    for nodeid, r in ranked[:TOP]:
        terminalreporter.write_line(f"{r['cpu']:7.1f} s {r['pythons']:4} py  {nodeid}")
