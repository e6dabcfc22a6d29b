"""test_daemon.py - ternd as an admin meets it: start/status/stop through
the CLI, foreground logs, refused configurations (bad value with
file:line, open relay), reload (applied without dropping a session,
refused when invalid), listeners on IPv4/IPv6 with per-listener
overrides, and a graceful SIGTERM.
"""

import os
import pwd
import re
import signal
import socket
import time
from pathlib import Path

import pytest

import harness

RELAY_FATAL = ("in parameter smtpd_relay_restrictions or smtpd_recipient_restrictions, "
               "specify at least one working instance of: reject_unauth_destination, "
               "defer_unauth_destination, reject, defer, defer_if_permit or check_relay_domains")


def daemon_config(cfg):
    """Keep the pid file and control socket inside the test's directory."""
    cfg.set(data_directory=str(cfg.path / "data"))
    return cfg


def ternd_argv(cfg):
    return [str(harness.tern_bin("ternd")), "-f", "-c", str(cfg)]


def start_ternd(start_program, cfg, **kw):
    return start_program(ternd_argv(cfg), ready=cfg.smtp_port, name="ternd", **kw)


def conf_line(cfg, text):
    """The line number of text in tern.conf (for file:line messages)."""
    for n, line in enumerate(cfg.conf_path.read_text().splitlines(), 1):
        if line.startswith(text):
            return n
    raise AssertionError("%r not in tern.conf" % text)


def greeting(port, host="127.0.0.1"):
    code, lines = harness.smtp_greeting(port, host)
    assert code == 220
    return lines[0]


def open_session(port, host="127.0.0.1"):
    s = socket.create_connection((host, port), timeout=10)
    f = s.makefile("rb")
    code, lines = harness.smtp_read_reply(f)
    assert code == 220
    return s, f, lines[0]


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture
def cli_daemon(config_dir):
    """A config for "tern start"; whatever the test does, no ternd is
    left running afterwards."""
    cfg = daemon_config(config_dir)
    yield cfg
    pidfile = cfg.path / "data" / "ternd.pid"
    if pidfile.exists():
        pid = int(pidfile.read_text().strip() or 0)
        if pid and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_foreground_start_logs_and_sigterm(config_dir, start_program):
    cfg = daemon_config(config_dir)
    prog = start_ternd(start_program, cfg)
    prog.wait_log(re.compile(r"tern/ternd\[%d\]: daemon started -- version \S+, "
                             r"configuration %s\n" % (prog.pid, re.escape(str(cfg)))))
    assert greeting(cfg.smtp_port) == "tern.test ESMTP Tern"
    assert (cfg.path / "data" / "ternd.pid").read_text().strip() == str(prog.pid)
    sock = cfg.path / "data" / "control.sock"
    assert oct(sock.stat().st_mode & 0o777) == "0o600"
    assert prog.stop() == 0
    assert "terminating on signal 15" in prog.stderr()
    assert not (cfg.path / "data" / "ternd.pid").exists()
    assert not sock.exists()


def test_cli_start_status_stop(cli_daemon):
    cfg = cli_daemon
    rc, out, err = harness.run_tern("status", config_dir=cfg)
    assert (rc, err) == (1, "tern/tern: the Tern mail system is not running\n")

    rc, out, err = harness.run_tern("start", config_dir=cfg)
    assert rc == 0, err
    assert "tern/tern: starting the Tern mail system" in err
    pid = int((cfg.path / "data" / "ternd.pid").read_text())
    assert greeting(cfg.smtp_port) == "tern.test ESMTP Tern"

    rc, out, err = harness.run_tern("status", config_dir=cfg)
    assert (rc, err) == (0, "tern/tern: the Tern mail system is running: PID: %d\n" % pid)
    rc, out, err = harness.run_tern("start", config_dir=cfg)
    assert rc == 1
    assert "tern: the Tern mail system is already running (pid %d)" % pid in err
    assert harness.run_tern("flush", config_dir=cfg)[0] == 0

    rc, out, err = harness.run_tern("stop", config_dir=cfg)
    assert rc == 0, err
    assert "tern/tern: stopping the Tern mail system" in err
    assert not pid_alive(pid)
    assert harness.run_tern("status", config_dir=cfg)[0] == 1
    log = cfg.maillog()
    assert "tern/ternd[%d]: daemon started -- version" % pid in log
    assert "tern/ternd[%d]: terminating on signal 15" % pid in log


def test_cli_abort(cli_daemon):
    cfg = cli_daemon
    assert harness.run_tern("start", config_dir=cfg)[0] == 0
    pid = int((cfg.path / "data" / "ternd.pid").read_text())
    rc, out, err = harness.run_tern("abort", config_dir=cfg)
    assert rc == 0, err
    assert not pid_alive(pid)
    assert not harness.port_accepts(cfg.smtp_port)


@pytest.mark.parametrize("command", ["stop", "reload", "flush", "abort"])
def test_commands_when_down(config_dir, command):
    cfg = daemon_config(config_dir)
    rc, out, err = harness.run_tern(command, config_dir=cfg)
    assert rc == 1
    assert "tern: the Tern mail system is not running\n" in err


def test_bad_config_refused_with_file_and_line(config_dir, start_program):
    cfg = daemon_config(config_dir)
    cfg.set(smtpd_helo_required="maybe")
    line = conf_line(cfg, "smtpd_helo_required")
    want = ('tern/ternd: fatal: %s, line %d: bad boolean value "maybe" for parameter '
            '"smtpd_helo_required"' % (cfg.conf_path, line))
    prog = start_program(ternd_argv(cfg), check_exit=False)
    harness.wait_for(lambda: not prog.alive, what="ternd to exit")
    assert prog.returncode == 1
    assert want in prog.stderr()
    rc, out, err = harness.run_tern("start", config_dir=cfg)
    assert rc == 1
    assert "%s, line %d" % (cfg.conf_path, line) in err
    assert not harness.port_accepts(cfg.smtp_port)


@pytest.mark.parametrize("settings,suffix", [
    ({"smtpd_relay_restrictions": "permit_mynetworks, permit",
      "smtpd_recipient_restrictions": ""}, ""),
    ({"smtpd_relay_restrictions": "permit_mynetworks, permit_sasl_authenticated",
      "smtpd_recipient_restrictions": "permit, reject_unauth_destination"}, ""),
    ({"listen_sub": "127.0.0.1:%d" % harness.free_port(),
      "sub.smtpd_relay_restrictions": "permit_sasl_authenticated"}, " (listener sub)"),
])
def test_open_relay_refused(config_dir, start_program, settings, suffix):
    cfg = daemon_config(config_dir)
    for k, v in settings.items():
        cfg.set(k, v)
    prog = start_program(ternd_argv(cfg), check_exit=False)
    harness.wait_for(lambda: not prog.alive, what="ternd to exit")
    assert prog.returncode == 1
    assert "tern/ternd: fatal: " + RELAY_FATAL + suffix + "\n" in prog.stderr()
    rc, out, err = harness.run_tern("check", config_dir=cfg)
    assert rc == 1 and RELAY_FATAL in err


def test_relay_check_accepts_safe_lists(config_dir, start_program):
    """reject at the end of the recipient list is a working instance.
    (Restriction classes come with the restriction engine, issue 5.)"""
    cfg = daemon_config(config_dir)
    cfg.set(smtpd_relay_restrictions="permit_mynetworks",
            smtpd_recipient_restrictions="permit_mynetworks, reject")
    start_ternd(start_program, cfg)


def test_reload_applies_change_without_dropping_session(config_dir, start_program):
    cfg = daemon_config(config_dir)
    prog = start_ternd(start_program, cfg)
    s, f, banner = open_session(cfg.smtp_port)
    assert banner == "tern.test ESMTP Tern"
    cfg.set(smtpd_banner="reloaded.test ESMTP Tern")
    rc, out, err = harness.run_tern("reload", config_dir=cfg)
    assert rc == 0, err
    assert "tern/tern: refreshing the Tern mail system" in err
    prog.wait_log("reload -- version")
    assert greeting(cfg.smtp_port) == "reloaded.test ESMTP Tern"
    # the session opened before the reload is still served
    s.sendall(b"NOOP\r\n")
    assert harness.smtp_read_reply(f)[0] == 250
    s.sendall(b"QUIT\r\n")
    assert harness.smtp_read_reply(f)[0] == 221
    s.close()


def test_sighup_reloads(config_dir, start_program):
    cfg = daemon_config(config_dir)
    prog = start_ternd(start_program, cfg)
    cfg.set(smtpd_banner="hup.test ESMTP Tern")
    prog.signal(signal.SIGHUP)
    prog.wait_log("reload -- version")
    assert greeting(cfg.smtp_port) == "hup.test ESMTP Tern"


def test_reload_bad_config_refused_old_keeps_working(config_dir, start_program):
    cfg = daemon_config(config_dir)
    prog = start_ternd(start_program, cfg)
    # a value error: reported with file and line
    cfg.set(smtpd_banner="never.test ESMTP Tern", smtpd_helo_required="maybe")
    line = conf_line(cfg, "smtpd_helo_required")
    rc, out, err = harness.run_tern("reload", config_dir=cfg)
    assert rc == 1
    assert "%s, line %d: bad boolean value" % (cfg.conf_path, line) in err
    assert greeting(cfg.smtp_port) == "tern.test ESMTP Tern"
    # an error only ternd sees (the open-relay check): refused by the daemon
    cfg.set(smtpd_helo_required="no", smtpd_relay_restrictions="permit")
    rc, out, err = harness.run_tern("reload", config_dir=cfg)
    assert rc == 1
    assert "tern: reload refused: " + RELAY_FATAL in err
    prog.wait_log("reload refused, keeping the running configuration")
    assert greeting(cfg.smtp_port) == "tern.test ESMTP Tern"
    assert prog.alive


def test_reload_rebinds_changed_listeners(config_dir, start_program):
    cfg = daemon_config(config_dir)
    other, third = harness.free_ports(2)
    cfg.set(listen_sub="127.0.0.1:%d" % other)
    prog = start_ternd(start_program, cfg)
    assert harness.port_accepts(other)
    cfg.set(listen_sub="127.0.0.1:%d" % third)
    assert harness.run_tern("reload", config_dir=cfg)[0] == 0
    prog.wait_log("reload -- version")
    assert harness.port_accepts(third)
    assert not harness.port_accepts(other)
    assert greeting(cfg.smtp_port) == "tern.test ESMTP Tern"


def test_listeners_ipv4_ipv6_and_override(config_dir, start_program):
    cfg = daemon_config(config_dir)
    v6 = harness._has_ipv6_loopback()
    sub = harness.free_port()
    cfg.set(listen_smtp="127.0.0.1:%d%s" % (cfg.smtp_port, " [::1]:%d" % cfg.smtp_port if v6 else ""))
    cfg.set("listen_sub", "%d" % sub)  # a bare port: inet_interfaces (loopback-only)
    cfg.set("sub.smtpd_banner", "sub.test ESMTP Tern")
    start_ternd(start_program, cfg)
    assert greeting(cfg.smtp_port) == "tern.test ESMTP Tern"
    assert greeting(sub) == "sub.test ESMTP Tern"
    if v6:
        assert greeting(cfg.smtp_port, "::1") == "tern.test ESMTP Tern"
        assert greeting(sub, "::1") == "sub.test ESMTP Tern"


def test_inet_protocols_ipv4_only(config_dir, start_program):
    if not harness._has_ipv6_loopback():
        pytest.skip("no IPv6 loopback")
    cfg = daemon_config(config_dir)
    cfg.set(listen_smtp="*:%d" % cfg.smtp_port, inet_protocols="ipv4")
    start_ternd(start_program, cfg)
    with pytest.raises(OSError):
        socket.create_connection(("::1", cfg.smtp_port), timeout=2).close()


def test_bind_failure_names_listener(config_dir, start_program):
    cfg = daemon_config(config_dir)
    busy = socket.socket()
    busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    busy.bind(("127.0.0.1", cfg.smtp_port))
    busy.listen(1)
    try:
        prog = start_program(ternd_argv(cfg), check_exit=False)
        harness.wait_for(lambda: not prog.alive, what="ternd to exit")
        assert prog.returncode == 1
        assert ("fatal: listener smtp: bind 127.0.0.1:%d: Address already in use"
                % cfg.smtp_port) in prog.stderr()
        assert not (cfg.path / "data" / "control.sock").exists()
    finally:
        busy.close()


def test_sigterm_drains_open_session(config_dir, start_program):
    cfg = daemon_config(config_dir)
    prog = start_ternd(start_program, cfg)
    s, f, _ = open_session(cfg.smtp_port)
    t0 = time.monotonic()
    prog.signal(signal.SIGTERM)
    code, lines = harness.smtp_read_reply(f)
    assert (code, lines[0]) == (421, "4.3.2 Service shutting down")
    harness.wait_for(lambda: not prog.alive, timeout=15, what="ternd to exit")
    assert prog.returncode == 0
    assert time.monotonic() - t0 < 10
    assert not harness.port_accepts(cfg.smtp_port)
    s.close()


def test_check_creates_directories(config_dir):
    cfg = daemon_config(config_dir)
    rc, out, err = harness.run_tern("check", config_dir=cfg)
    assert rc == 0, err
    for d in ("queue", "data"):
        p = cfg.path / d
        assert p.is_dir()
        assert p.stat().st_mode & 0o022 == 0
    (cfg.path / "data").chmod(0o777)
    rc, out, err = harness.run_tern("check", config_dir=cfg)
    assert "warning: group or other writable: %s" % (cfg.path / "data") in err


def test_check_bad_config(config_dir):
    cfg = daemon_config(config_dir)
    cfg.set(message_size_limit="lots")
    line = conf_line(cfg, "message_size_limit")
    rc, out, err = harness.run_tern("check", config_dir=cfg)
    assert rc == 1
    assert "%s, line %d:" % (cfg.conf_path, line) in err


@pytest.mark.skipif(os.getuid() != 0, reason="privilege handling needs root")
def test_engine_never_runs_as_root(config_dir, start_program):
    """As Postfix: mail_owner may not be root; a root-owned queue and data
    directory are handed to mail_owner; every ternd thread runs as it."""
    cfg = daemon_config(config_dir)
    cfg.set(mail_owner="root")
    prog = start_program(ternd_argv(cfg), check_exit=False)
    harness.wait_for(lambda: not prog.alive, what="ternd to exit")
    assert prog.returncode == 1
    assert "fatal: parameter mail_owner: user root has privileged user ID" in prog.stderr()
    rc, out, err = harness.run_tern("check", config_dir=cfg)
    assert rc == 1 and "user root has privileged user ID" in err

    cfg.set(mail_owner=harness.mail_owner())
    for d in ("queue", "data"):
        (cfg.path / d).mkdir(exist_ok=True)  # as root, by hand
    prog = start_program(ternd_argv(cfg), ready=cfg.smtp_port)
    owner = pwd.getpwnam(harness.mail_owner())
    for d in ("queue", "queue/maildrop", "data"):
        assert (cfg.path / d).stat().st_uid == owner.pw_uid, d
    assert re.search(r"gave directory \S+/queue to mail_owner", prog.stderr() + cfg.maillog())
    tasks = Path("/proc/%d/task" % prog.pid).iterdir()
    for t in tasks:
        status = (t / "status").read_text()
        uids = re.search(r"^Uid:\s+(.*)$", status, re.M).group(1).split()
        assert set(uids) == {str(owner.pw_uid)}, (t, uids)
    harness.smtp_greeting(cfg.smtp_port)
