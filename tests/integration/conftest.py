"""conftest.py - pytest fixtures for Tern's integration tests.

Fixtures: tern_build, config_dir / make_config_dir, start_program, dns.
Every program a test starts is stopped at teardown (SIGTERM, then
SIGKILL); when a test fails, the report gets each program's command line,
exit status and output, and every config dir's maillog_file. The helpers
themselves are in harness.py (see README.md).
"""

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

def pytest_configure(config):
    """As root, ternd's engine runs as mail_owner and must reach the test
    directories. pytest makes /tmp/pytest-of-root private (0700) again at
    the start of every session, which would cut off the ternd of a session
    already running; so each session gets its own base directory instead
    (harness.ConfigDir makes the path to each config searchable)."""
    if os.getuid() == 0 and not config.option.basetemp:
        config.option.basetemp = "/tmp/tern-tests-%d" % os.getpid()
        config._tern_basetemp = config.option.basetemp


def pytest_unconfigure(config):
    base = getattr(config, "_tern_basetemp", None)
    if base and getattr(config, "_tern_passed", False):
        shutil.rmtree(base, ignore_errors=True)


def pytest_sessionfinish(session, exitstatus):
    session.config._tern_passed = exitstatus == 0


PROGRAMS_KEY = pytest.StashKey[list]()
CONFIGS_KEY = pytest.StashKey[list]()


@pytest.fixture
def tern_build():
    """The build directory ($TERN_BUILD, default <repo>/build)."""
    return harness.BUILD


@pytest.fixture
def make_config_dir(request, tmp_path):
    """Factory: make_config_dir(name="conf", **settings) -> ConfigDir,
    for tests that need several configs (e.g. two ternd instances)."""
    configs = request.node.stash.setdefault(CONFIGS_KEY, [])

    def make(name="conf", **settings):
        cfg = harness.ConfigDir(tmp_path / name, **settings)
        configs.append(cfg)
        return cfg

    return make


@pytest.fixture
def config_dir(make_config_dir):
    """A temporary config dir with a minimal, hermetic tern.conf
    (harness.ConfigDir): cfg.set(...), cfg.write_table(...),
    cfg.use_dns(dns), cfg.maillog()."""
    return make_config_dir()


@pytest.fixture
def start_program(request, tmp_path):
    """Factory: start_program(argv, ready=None, env=None, timeout=10,
    name=None, cwd=None, stdin=None, check_exit=True) -> Program.

    ready: TCP port, (host, port), log text or regex, callable, or a list.
    At teardown every program is stopped; one that needed SIGKILL or
    ended with a status other than 0 / SIGTERM fails the test (a crash
    or a sanitizer report at exit must not go unnoticed) unless started
    with check_exit=False.
    """
    started = request.node.stash.setdefault(PROGRAMS_KEY, [])
    logdir = tmp_path / "logs"

    def start(argv, ready=None, env=None, timeout=10.0, name=None, cwd=None,
              stdin=None, check_exit=True):
        prog = harness.Program(argv, logdir, name=name, env=env, cwd=cwd, stdin=stdin)
        prog.check_exit = check_exit
        started.append(prog)
        prog.start()
        prog.wait_ready(ready, timeout)
        return prog

    yield start
    bad = []
    for prog in reversed(started):
        prog.stop()
        if prog.check_exit and not prog.stopped_cleanly():
            bad.append(prog)
    if bad:
        pytest.fail("programs did not stop cleanly:\n" +
                    "\n".join("%s: %s%s" % (p.name, p.status, ", needed SIGKILL" if p.killed else "")
                              for p in bad), pytrace=False)


@pytest.fixture
def dns(start_program):
    """Factory: dns(mx=..., a=..., aaaa=..., txt=..., ptr=..., cname=...)
    -> DnsServer running dnsmasq on a free loopback port (.port,
    .server for dns_servers, .query(name, type)). See
    harness.dnsmasq_argv for the record formats."""

    def start(**records):
        return harness.start_dns(start_program, **records)

    return start


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the logs of the test's programs and maillogs."""
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    for prog in item.stash.get(PROGRAMS_KEY, []):
        rep.sections.append(("program %s (pid %s, %s)" % (prog.name, prog.pid, prog.status),
                             prog.logs()))
    for cfg in item.stash.get(CONFIGS_KEY, []):
        log = cfg.maillog()
        if log:
            rep.sections.append(("maillog %s" % cfg.maillog_file, log))
