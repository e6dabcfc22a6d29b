"""pfinstance.py - a private Postfix instance for interop tests.

Runs Debian's Postfix (3.7, installed and disabled on this machine) as a
second MTA next to ternd, the way tests/bench/bench.py does, without
touching /etc/postfix's own instance or port 25:

- its own config directory (`postfix -c DIR`), queue_directory,
  data_directory and virtual maildirs, all inside one temporary directory;
- master.cf is /etc/postfix/master.cf with the smtp listener moved to
  127.0.0.1:PORT, chroot off (the queue is not a chroot jail) and the pipe
  services dropped (their users need not exist);
- main.cf: loopback only, IPv4, no local delivery, `virtual_mailbox_domains`
  delivered into maildirs under the instance directory as the postfix user,
  `transport_maps` for the domains it relays (to ternd);
- logging: no syslog daemon runs here (there is no /dev/log), so the
  instance writes `maillog_file` inside its directory through postlogd
  (`maillog_file_prefixes` must allow that path, else `postfix start`
  fails). `debug_peer_list` makes smtpd and smtp log each SMTP command
  exchanged with loopback peers ("< host[addr]: MAIL FROM:<...> BODY=...").
  postfix(1) itself writes its messages to stderr only if that is a
  terminal, so it runs on a pseudo-terminal and a failed start says why.

start() runs `postfix -c DIR start` and waits until the port greets;
stop() runs `postfix -c DIR stop`, waits for the master (by the PID in
pid/master.pid), then `postfix abort` and SIGKILL. diagnostics() gathers
postfix start's output, the maillog (without the debug internals), the
queue (postcat of every queue file), the defer/bounce/trace logs and
main.cf, for failure reports.

tests/bench/bench.py leaves maillog_file out ("postlogd makes smtpd hang
on this machine"). With maillog_file_prefixes covering the path, logging
through postlogd works here, also under load (smtp-source, 20 sessions,
3000 messages, checked when this was written); without it, `postfix
start` exits 1 and, when its stderr is not a terminal, says nothing.
"""

import os
import pwd
import pty
import re
import select
import signal
import socket
import subprocess
import time
from pathlib import Path

import harness
from pfmaster import private_master_cf

POSTFIX = "/usr/sbin/postfix"
POSTCAT = "/usr/sbin/postcat"
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold", "corrupt")
LOGS = ("defer", "bounce", "trace")


class PostfixError(Exception):
    pass


def pid_alive(pid):
    """True if pid runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path("/proc/%d/stat" % pid).read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _port_accepts(port, timeout=0.5):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(4).startswith(b"220")
    except OSError:
        return False


class PostfixInstance:
    """One private Postfix instance in `path` listening on 127.0.0.1:port.

    mailboxes: {address: maildir relative to virtual_mailbox_base}, e.g.
    {"user@pf.test": "pf.test/user/"}; the domains of these addresses are
    virtual_mailbox_domains, any other address there is refused at RCPT
    ("User unknown in virtual mailbox table"). transport: {domain:
    "transport:nexthop"} (transport_maps). main: extra main.cf settings.
    """

    def __init__(self, path, port, myhostname="mx.pf.test", mailboxes=None,
                 transport=None, main=None):
        self.dir = Path(path)
        self.port = port
        self.myhostname = myhostname
        self.conf = self.dir / "conf"
        self.queue_dir = self.dir / "queue"
        self.data_dir = self.dir / "data"
        self.mail = self.dir / "mail"
        self.maillog_path = self.dir / "maillog"
        self.mailboxes = dict(mailboxes or {})
        self.transport = dict(transport or {})
        self.extra = dict(main or {})
        self.master_pid = None
        self.started = False
        self.start_output = ""

    # -- configuration -------------------------------------------------------

    def master_cf(self):
        try:
            return private_master_cf(self.port)
        except ValueError as e:
            raise PostfixError(str(e))

    @staticmethod
    def _inline(table):
        return "inline:{ %s }" % ", ".join("%s=%s" % kv for kv in table.items()) if table else ""

    def main_cf(self):
        pw = pwd.getpwnam("postfix")
        domains = sorted({a.rpartition("@")[2] for a in self.mailboxes})
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue_dir,
            "data_directory": self.data_dir,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "myhostname": self.myhostname,
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "relayhost": "",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "virtual_mailbox_domains": " ".join(domains),
            "virtual_mailbox_base": self.mail,
            "virtual_mailbox_maps": self._inline(self.mailboxes),
            "virtual_uid_maps": "static:%d" % pw.pw_uid,
            "virtual_gid_maps": "static:%d" % pw.pw_gid,
            "transport_maps": self._inline(self.transport),
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_connection_rate_limit": "0",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            # short retries, in case a test makes ternd answer 4xx
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "maillog_file": self.maillog_path,
            "maillog_file_prefixes": self.dir,
            "debug_peer_list": "127.0.0.1",
            "debug_peer_level": "1",
        }
        settings.update(self.extra)
        return "".join("%s = %s\n" % (k, v) for k, v in settings.items())

    # -- life cycle ------------------------------------------------------------

    def _postfix(self, *args, timeout=60):
        """Run `postfix -c DIR ARGS`; returns (exit status, output). Its
        messages go to stderr only when that is a terminal (else only to
        the maillog, which postlogd writes only once the instance runs),
        so it gets a pseudo-terminal."""
        master_fd, slave_fd = pty.openpty()
        try:
            proc = subprocess.Popen([POSTFIX, "-c", str(self.conf), *args],
                                    stdin=subprocess.DEVNULL, stdout=slave_fd, stderr=slave_fd)
        finally:
            os.close(slave_fd)
        out = b""
        deadline = time.monotonic() + timeout
        try:
            while True:
                # The master daemon may keep the terminal open: stop reading
                # once postfix(1) has exited and nothing more comes.
                ready, _, _ = select.select([master_fd], [], [], 0.1)
                if ready:
                    try:
                        data = os.read(master_fd, 65536)
                    except OSError:             # EIO: every writer is gone
                        data = b""
                    if data:
                        out += data
                        continue
                    if proc.poll() is not None:
                        break
                elif proc.poll() is not None:
                    break
                if time.monotonic() >= deadline:
                    proc.kill()
                    proc.wait()
                    raise subprocess.TimeoutExpired(proc.args, timeout, out)
        finally:
            os.close(master_fd)
        proc.wait()
        return proc.returncode, out.decode("utf-8", "replace").replace("\r\n", "\n")

    def _read_master_pid(self):
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return self.master_pid

    def start(self, timeout=30.0):
        pw = pwd.getpwnam("postfix")
        self.dir.mkdir(parents=True, exist_ok=True)
        harness.traversable(self.dir)       # pytest's tmp dirs are 0700
        for d in (self.dir, self.conf, self.queue_dir, self.data_dir, self.mail):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
        for domain in {a.rpartition("@")[2] for a in self.mailboxes}:
            (self.mail / domain).mkdir(exist_ok=True)
            os.chown(self.mail / domain, pw.pw_uid, pw.pw_gid)
        os.chown(self.mail, pw.pw_uid, pw.pw_gid)
        (self.conf / "master.cf").write_text(self.master_cf())
        (self.conf / "main.cf").write_text(self.main_cf())
        self.started = True                 # even a failed start may leave a master
        rc, out = self._postfix("start")
        self.start_output = out
        self.master_pid = self._read_master_pid()
        if rc != 0:
            raise PostfixError("postfix -c %s start: exit %d\n%s" % (
                self.conf, rc, self.diagnostics()))
        deadline = time.monotonic() + timeout
        while not _port_accepts(self.port):
            self.master_pid = self._read_master_pid()
            if self.master_pid is not None and not pid_alive(self.master_pid):
                raise PostfixError("Postfix master (pid %d) exited during start\n%s" % (
                    self.master_pid, self.diagnostics()))
            if time.monotonic() >= deadline:
                raise PostfixError("Postfix's smtpd does not greet on 127.0.0.1:%d after %.0fs\n%s"
                                   % (self.port, timeout, self.diagnostics()))
            time.sleep(0.05)
        self.master_pid = self._read_master_pid()
        return self

    def alive(self):
        return self.master_pid is not None and pid_alive(self.master_pid)

    def stop(self):
        """Stop the instance: `postfix stop`, then `postfix abort`, then
        SIGKILL to the master by PID. Returns a note of what was needed."""
        if not self.started:
            return "not started"
        self.started = False
        self.master_pid = self._read_master_pid()
        notes = []
        try:
            rc, out = self._postfix("stop", timeout=30)
            if rc != 0:
                notes.append("postfix stop: exit %d: %s" % (rc, out.strip()))
        except subprocess.TimeoutExpired:
            notes.append("postfix stop timed out")
        if self.master_pid is None:
            return "; ".join(notes) or "stopped"
        for action in ("wait", "abort", "kill"):
            if action == "abort":
                notes.append("master %d still running after postfix stop: abort" % self.master_pid)
                try:
                    self._postfix("abort", timeout=30)
                except subprocess.TimeoutExpired:
                    pass
            elif action == "kill":
                notes.append("master %d still running after postfix abort: SIGKILL"
                             % self.master_pid)
                try:
                    os.kill(self.master_pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 10
            while pid_alive(self.master_pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not pid_alive(self.master_pid):
                break
        return "; ".join(notes) or "stopped"

    # -- looking inside ------------------------------------------------------------

    def maillog(self):
        try:
            return self.maillog_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def maillog_summary(self):
        """The maillog without the verbose internals debug_peer_list adds:
        queue ID lines, the SMTP commands and replies, warnings and
        connection events."""
        keep = re.compile(r": (?:(?:[0-9A-F]+|NOQUEUE): |[<>] \S+: |"
                          r"(?:warning|error|fatal|panic): |"
                          r"(?:connect|disconnect|lost connection|timeout|daemon|starting|"
                          r"stopping|terminating|reload)\b)")
        return "\n".join(line for line in self.maillog().splitlines() if keep.search(line))

    def maildir(self, address):
        """The maildir (a Path) of a virtual mailbox address."""
        return self.mail / self.mailboxes[address].rstrip("/")

    def queue_files(self):
        files = []
        for q in QUEUES:
            base = self.queue_dir / q
            if base.is_dir():
                files += sorted(p for p in base.rglob("*") if p.is_file())
        return files

    def diagnostics(self):
        """Everything that helps to see why mail did not get through."""
        parts = ["postfix instance %s, port %d, master pid %s (%s)" % (
            self.conf, self.port, self.master_pid,
            "running" if self.alive() else "not running")]
        if self.start_output.strip():
            parts.append("--- postfix start output ---\n" + self.start_output.rstrip())
        parts.append("--- maillog %s (debug_peer_list internals left out) ---\n%s" % (
            self.maillog_path, self.maillog_summary() or "(empty)"))
        files = self.queue_files()
        parts.append("--- queue: %d file(s) ---" % len(files))
        for f in files:
            p = subprocess.run([POSTCAT, "-c", str(self.conf), str(f)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
            parts.append("%s:\n%s" % (f, p.stdout.decode("utf-8", "replace").rstrip()))
        for log in LOGS:
            base = self.queue_dir / log
            if base.is_dir():
                for f in sorted(p for p in base.rglob("*") if p.is_file()):
                    parts.append("%s:\n%s" % (f, f.read_text(errors="replace").rstrip()))
        for conf in ("main.cf",):
            p = self.conf / conf
            if p.exists():
                parts.append("--- %s ---\n%s" % (p, p.read_text().rstrip()))
        return "\n".join(parts)

    def wait_log(self, pattern, timeout=10.0, what=None):
        """Wait until the maillog matches pattern (a regex); returns the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.maillog())
            if m:
                return m
            if time.monotonic() >= deadline:
                tail = self.maillog_summary().splitlines()[-40:]
                raise AssertionError(
                    "timed out after %.0fs waiting for Postfix to log %s\n"
                    "--- the end of its maillog %s (debug_peer_list internals left out) ---\n%s"
                    % (timeout, what or "/%s/" % pattern, self.maillog_path, "\n".join(tail)))
            time.sleep(0.05)
