"""harness.py - reusable helpers for Tern's integration tests.

Paths to the built binaries ($TERN_BUILD), running the tern CLI, temporary
config directories, free loopback ports, foreground programs that are
started, waited for and always stopped, a dnsmasq-backed test DNS with a
tiny raw DNS client to check it, and an SMTP greeting reader. The pytest
fixtures that wrap these live in conftest.py; tests import from here.

Pitfall: everything listens on loopback only, on ports chosen below the
kernel's ephemeral range so outgoing connections cannot steal them.
"""

import errno
import ipaddress
import os
import pwd
import random
import re
import shlex
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("TERN_BUILD") or REPO / "build")
DNSMASQ = "/usr/sbin/dnsmasq"


# --- binaries and the tern CLI -------------------------------------------


def tern_bin(name):
    """Path of program `name` built from mta/, policyd/ or milters/."""
    return BUILD / "bin" / name


def tool_bin(name):
    """Path of test tool `name` built from tests/tools/<name>.c."""
    return BUILD / "tests" / name


def run_tern(*args, config_dir=None, input=None, check=False, env=None,
             timeout=60, binary=False):
    """Run `tern ARGS...` and return (rc, stdout, stderr).

    config_dir (a ConfigDir or a path) is passed as $TERN_CONFIG_DIR, so
    it works for every command. input is written to stdin (str or bytes).
    Output is str unless binary=True (or input is bytes), then bytes.
    With check=True a non-zero exit fails the test with stderr shown.
    """
    full_env = dict(os.environ)
    if config_dir is not None:
        full_env["TERN_CONFIG_DIR"] = os.fspath(config_dir)
    if env:
        full_env.update(env)
    binary = binary or isinstance(input, (bytes, bytearray))
    if input is not None and not binary:
        input = input.encode()
    proc = subprocess.run([str(tern_bin("tern")), *map(str, args)],
                          input=input, capture_output=True, env=full_env,
                          timeout=timeout,
                          stdin=None if input is not None else subprocess.DEVNULL)
    out, err = proc.stdout, proc.stderr
    if not binary:
        out = out.decode("utf-8", "surrogateescape")
        err = err.decode("utf-8", "surrogateescape")
    if check and proc.returncode != 0:
        raise AssertionError("tern %s: exit %d\nstdout:\n%s\nstderr:\n%s" % (
            " ".join(map(str, args)), proc.returncode, out, err))
    return proc.returncode, out, err


def wait_for(predicate, timeout=10.0, interval=0.05, what="condition"):
    """Poll predicate() until it returns a true value (which is returned);
    raise TimeoutError naming `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


# --- free ports ------------------------------------------------------------


def _has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


HAS_IPV6 = _has_ipv6_loopback()
_ports_given = set()


def _ephemeral_low():
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _port_is_free(port):
    """True if TCP and UDP `port` can be bound on 127.0.0.1 (and ::1)."""
    hosts = [(socket.AF_INET, "127.0.0.1")]
    if HAS_IPV6:
        hosts.append((socket.AF_INET6, "::1"))
    for family, host in hosts:
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            try:
                with socket.socket(family, kind) as s:
                    s.bind((host, port))
            except OSError:
                return False
    return True


def free_port():
    """A port free for TCP and UDP on 127.0.0.1 and (if present) ::1.

    Ports come from below the ephemeral range at random, so neither a
    client's outgoing connection nor a concurrent test run is likely to
    take one between this check and the program's bind(); one pytest
    process never hands out the same port twice.
    """
    low = _ephemeral_low()
    start = 20000 if low > 21024 else 1024
    for _ in range(500):
        port = random.randrange(start, max(start + 1, low))
        if port not in _ports_given and _port_is_free(port):
            _ports_given.add(port)
            return port
    raise RuntimeError("no free loopback port found")


def free_ports(n):
    """n distinct free ports (see free_port())."""
    return [free_port() for _ in range(n)]


def port_accepts(port, host="127.0.0.1", timeout=0.5):
    """True if a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# --- config directories ----------------------------------------------------


def traversable(path):
    """Let mail_owner reach path: pytest's temporary directories are
    private to root (0700); add search permission up the chain."""
    if os.getuid() != 0:
        return
    for p in [Path(path)] + list(Path(path).parents):
        mode = p.stat().st_mode & 0o7777
        if mode & 0o011 != 0o011:
            p.chmod(mode | 0o011)


def give_to_mail_owner(path):
    """chown -R path to mail_owner (as root): the directories a test
    prepares for deliveries, as an admin would."""
    if os.getuid() != 0:
        return
    pw = pwd.getpwnam(mail_owner())
    os.chown(path, pw.pw_uid, pw.pw_gid)
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for name in files:
            os.chown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)


def mail_owner():
    """ternd never runs its engine as root: as root, tests use the
    unprivileged system user `make deps` creates (as a package's postinst
    would); as anyone else, that user."""
    if os.getuid() == 0:
        return "tern"
    return pwd.getpwuid(os.getuid()).pw_name


class ConfigDir:
    """A temporary Tern config directory with a minimal tern.conf.

    The defaults keep a test hermetic: loopback-only listeners on a free
    port (.smtp_port), the queue and the maillog inside the directory,
    mail_owner the current user. set() replaces parameters, append() adds
    raw text (e.g. listener overrides), write_table() creates a table
    file; tern.conf is rewritten on every change. os.fspath(cfg) is the
    directory, so it can be given wherever a path is expected.
    """

    def __init__(self, path, **settings):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        traversable(self.path)
        self.conf_path = self.path / "tern.conf"
        self.queue_directory = self.path / "queue"
        self.maillog_file = self.path / "maillog"
        self.smtp_port = free_port()
        self._settings = {
            "myhostname": "tern.test",
            "inet_interfaces": "loopback-only",
            "listen_smtp": "127.0.0.1:%d" % self.smtp_port,
            "mynetworks": "127.0.0.0/8 [::1]/128",
            "queue_directory": str(self.queue_directory),
            # control socket and pid file live here: tests never collide
            "data_directory": str(self.path / "data"),
            "mail_owner": mail_owner(),
            "maillog_file": str(self.maillog_file),
        }
        self._raw = []
        self.set(**settings)

    def use_virtual_box(self, **extra):
        """Deliver every recipient @example.test into one maildir (a
        static: virtual_mailbox_maps), with no local or alias lookups and
        no connection limits: the set-up of the load, crash and fault
        tests. Returns the maildir path (its new/ holds the messages)."""
        mail = self.path / "mail"
        (mail / "example.test").mkdir(parents=True, exist_ok=True)
        self.set(mydestination="",
                 virtual_mailbox_domains="example.test",
                 virtual_mailbox_maps="static:example.test/box/",
                 virtual_mailbox_base=str(mail),
                 alias_maps="",
                 local_recipient_maps="",
                 smtpd_client_connection_count_limit="0",
                 smtpd_client_connection_rate_limit="0",
                 **extra)
        give_to_mail_owner(mail)
        return mail / "example.test" / "box"

    def __fspath__(self):
        return str(self.path)

    def __str__(self):
        return str(self.path)

    def _write(self):
        lines = ["# written by tests/integration/harness.py"]
        lines += ["%s = %s" % (k, v) for k, v in self._settings.items()]
        self.conf_path.write_text("\n".join(lines + self._raw) + "\n")

    def set(self, name=None, value=None, **settings):
        """Set parameters: set("a", "b") or set(a="b", c="d") (names with
        dots, such as "smtps.smtpd_tls_wrappermode", need the first form)."""
        if name is not None:
            settings[name] = value
        for k, v in settings.items():
            self._settings[k] = str(v)
        self._write()
        return self

    def unset(self, name):
        """Remove a parameter so that its default applies."""
        self._settings.pop(name, None)
        self._write()
        return self

    def get(self, name):
        return self._settings.get(name)

    def append(self, text):
        """Append raw lines to tern.conf after the parameters."""
        self._raw.append(text.rstrip("\n"))
        self._write()
        return self

    def write_file(self, name, content, mode=None):
        """Write a file inside the config directory; returns its path."""
        p = self.path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, (bytes, bytearray)):
            p.write_bytes(content)
        else:
            p.write_text(content)
        if mode is not None:
            p.chmod(mode)
        return p

    def write_table(self, name, content):
        """Write a table source file; returns its path (use it as
        "type:" + str(path))."""
        return self.write_file(name, content)

    def use_dns(self, dns):
        """Point dns_servers at a DnsServer (or an "addr@port" string)."""
        return self.set(dns_servers=getattr(dns, "server", dns))

    def maillog(self):
        """The maillog_file contents so far ("" when not written yet)."""
        try:
            return self.maillog_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""


# --- foreground programs ---------------------------------------------------


class ProgramError(Exception):
    pass


def _describe_status(rc):
    if rc is None:
        return "running"
    if rc < 0:
        try:
            return "killed by %s" % signal.Signals(-rc).name
        except ValueError:
            return "killed by signal %d" % -rc
    return "exit %d" % rc


class Program:
    """A program run in the foreground for one test.

    stdout and stderr go to NAME.stdout / NAME.stderr in logdir. The
    process gets its own process group so stop() also reaches children
    it leaves behind. stop() sends SIGTERM, waits `grace` seconds, then
    SIGKILLs; .returncode and .status describe how it ended, .killed says
    whether SIGKILL was needed.
    """

    def __init__(self, argv, logdir, name=None, env=None, cwd=None, stdin=None):
        self.argv = [str(a) for a in argv]
        self.name = name or Path(self.argv[0]).name
        logdir = Path(logdir)
        logdir.mkdir(parents=True, exist_ok=True)
        base, n = self.name, 1
        while (logdir / (base + ".stderr")).exists():
            n += 1
            base = "%s.%d" % (self.name, n)
        self.stdout_path = logdir / (base + ".stdout")
        self.stderr_path = logdir / (base + ".stderr")
        self.env = dict(os.environ)
        if env:
            self.env.update({k: str(v) for k, v in env.items()})
        self.cwd = cwd
        self.stdin = stdin
        self.proc = None
        self.killed = False

    def start(self):
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=err, env=self.env, cwd=self.cwd,
                stdin=self.stdin if self.stdin is not None else subprocess.DEVNULL,
                start_new_session=True)
        return self

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def returncode(self):
        return self.proc.poll() if self.proc else None

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def status(self):
        return _describe_status(self.returncode)

    def stdout(self):
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr(self):
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def output(self):
        """stdout and stderr together (for log-line matching)."""
        return self.stdout() + self.stderr()

    def logs(self):
        """A report of the command line, status and both outputs."""
        return "$ %s\n[pid %s, %s%s]\n--- stdout ---\n%s--- stderr ---\n%s" % (
            shlex.join(self.argv), self.pid, self.status,
            ", needed SIGKILL" if self.killed else "", self.stdout(), self.stderr())

    def _ready_check(self, ready):
        if ready is None:
            return True
        if isinstance(ready, int):
            return port_accepts(ready)
        if isinstance(ready, tuple):
            return port_accepts(ready[1], host=ready[0])
        if isinstance(ready, str):
            return ready in self.output()
        if isinstance(ready, re.Pattern):
            return ready.search(self.output()) is not None
        if callable(ready):
            return ready()
        if isinstance(ready, list):
            return all(self._ready_check(r) for r in ready)
        raise TypeError("ready: port, (host, port), str, re.Pattern, callable or list")

    def wait_ready(self, ready, timeout=10.0):
        """Wait until `ready` holds: a TCP port (int or (host, port)) that
        accepts, a log line (str or compiled regex) in stdout/stderr, a
        callable returning true, or a list of these. Fails early, with
        the logs, if the program exits first."""
        deadline = time.monotonic() + timeout
        while True:
            if self._ready_check(ready):
                return self
            if not self.alive:
                raise ProgramError("%s exited before it was ready\n%s" % (self.name, self.logs()))
            if time.monotonic() >= deadline:
                raise ProgramError("%s not ready after %.1fs (waiting for %r)\n%s" % (
                    self.name, timeout, ready, self.logs()))
            time.sleep(0.05)

    def wait_log(self, text, timeout=10.0):
        """Wait for a str or regex to appear in the program's output."""
        self.wait_ready(text if isinstance(text, (str, re.Pattern)) else str(text), timeout)

    def signal(self, sig):
        if self.alive:
            os.kill(self.proc.pid, sig)

    def _kill_group(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError as e:
            if e.errno not in (errno.ESRCH, errno.EPERM):
                raise

    def stop(self, grace=5.0):
        """SIGTERM, then SIGKILL after `grace` seconds; returns returncode.
        Leftover members of the program's process group are killed too."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.killed = True
                self._kill_group()
                self.proc.wait(timeout=10)
        self._kill_group()
        return self.proc.returncode

    def stopped_cleanly(self):
        """True if it ended on its own with 0, or on our SIGTERM."""
        rc = self.returncode
        return not self.killed and rc in (0, -signal.SIGTERM, 128 + signal.SIGTERM)


def start_program(argv, logdir, ready=None, env=None, timeout=10.0, name=None,
                  cwd=None, stdin=None):
    """Start argv in the foreground and wait until `ready` (see
    Program.wait_ready). On failure the program is stopped and
    ProgramError carries its logs. Use the start_program fixture in
    tests: it also stops the program at teardown and reports its logs
    when the test fails."""
    prog = Program(argv, logdir, name=name, env=env, cwd=cwd, stdin=stdin).start()
    try:
        prog.wait_ready(ready, timeout)
    except BaseException:
        prog.stop(grace=1.0)
        raise
    return prog


# --- DNS: raw client -------------------------------------------------------

DNS_TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15,
             "TXT": 16, "AAAA": 28, "SRV": 33, "TLSA": 52, "ANY": 255}
DNS_TYPE_NAMES = {v: k for k, v in DNS_TYPES.items()}
DNS_RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN",
              4: "NOTIMP", 5: "REFUSED"}


def dns_build_query(name, qtype, qid=None, rd=True):
    """A DNS query message (RFC 1035 §4.1) for name and qtype ("MX" or
    a number)."""
    qid = random.randrange(65536) if qid is None else qid
    qtype = DNS_TYPES[qtype.upper()] if isinstance(qtype, str) else qtype
    header = struct.pack("!HHHHHH", qid, 0x0100 if rd else 0, 1, 0, 0, 0)
    qname = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("idna") if label and not label.isascii() else label.encode()
        if not 0 < len(raw) < 64:
            raise ValueError("bad DNS label in %r" % name)
        qname += bytes([len(raw)]) + raw
    return header + qname + b"\0" + struct.pack("!HH", qtype, 1)


def _dns_read_name(msg, pos):
    """Read a possibly compressed name (RFC 1035 §4.1.4); returns
    (name, position after the name in the original place)."""
    labels, end, jumps = [], None, 0
    while True:
        if pos >= len(msg):
            raise ValueError("DNS name runs past the message")
        n = msg[pos]
        if n & 0xC0 == 0xC0:
            if pos + 1 >= len(msg) or jumps > 32:
                raise ValueError("bad DNS compression pointer")
            if end is None:
                end = pos + 2
            pos = ((n & 0x3F) << 8) | msg[pos + 1]
            jumps += 1
            continue
        if n == 0:
            return ".".join(labels), (end if end is not None else pos + 1)
        labels.append(msg[pos + 1:pos + 1 + n].decode("ascii", "replace"))
        pos += 1 + n


def _dns_rdata(msg, rtype, start, rdlen):
    rdata = msg[start:start + rdlen]
    if rtype == 1:
        return str(ipaddress.IPv4Address(rdata))
    if rtype == 28:
        return str(ipaddress.IPv6Address(rdata))
    if rtype in (2, 5, 12):
        return _dns_read_name(msg, start)[0]
    if rtype == 15:
        return (struct.unpack("!H", rdata[:2])[0], _dns_read_name(msg, start + 2)[0])
    if rtype == 16:
        strings, i = [], 0
        while i < len(rdata):
            strings.append(rdata[i + 1:i + 1 + rdata[i]].decode("utf-8", "replace"))
            i += 1 + rdata[i]
        return tuple(strings)
    return rdata


class DnsReply:
    """A parsed reply: .rcode ("NOERROR", "NXDOMAIN"...), .answers as
    (name, type name, value) with value "1.2.3.4", (pref, host) for MX,
    a tuple of strings for TXT, a name for PTR/CNAME/NS, raw bytes
    otherwise; .values(type) lists the values of one type."""

    def __init__(self, qid, rcode, answers, flags):
        self.qid, self.rcode, self.answers, self.flags = qid, rcode, answers, flags

    def values(self, rtype):
        return [v for _, t, v in self.answers if t == rtype.upper()]

    def __repr__(self):
        return "DnsReply(%s, %r)" % (self.rcode, self.answers)


def dns_parse_reply(msg):
    """Parse a DNS reply message; raises ValueError if malformed."""
    if len(msg) < 12:
        raise ValueError("short DNS message")
    qid, flags, qd, an, _, _ = struct.unpack("!HHHHHH", msg[:12])
    pos = 12
    for _ in range(qd):
        pos = _dns_read_name(msg, pos)[1] + 4
    answers = []
    for _ in range(an):
        name, pos = _dns_read_name(msg, pos)
        if pos + 10 > len(msg):
            raise ValueError("truncated DNS record")
        rtype, _, _, rdlen = struct.unpack("!HHIH", msg[pos:pos + 10])
        pos += 10
        if pos + rdlen > len(msg):
            raise ValueError("truncated DNS rdata")
        answers.append((name, DNS_TYPE_NAMES.get(rtype, str(rtype)),
                        _dns_rdata(msg, rtype, pos, rdlen)))
        pos += rdlen
    rcode = DNS_RCODES.get(flags & 0xF, str(flags & 0xF))
    return DnsReply(qid, rcode, answers, flags)


def _dns_query_tcp(query, port, host, timeout):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        s.sendall(struct.pack("!H", len(query)) + query)
        f = s.makefile("rb")
        hdr = f.read(2)
        if len(hdr) != 2:
            raise ConnectionError("DNS server closed the TCP connection")
        data = f.read(struct.unpack("!H", hdr)[0])
    return dns_parse_reply(data)


def dns_query(name, qtype, port, host="127.0.0.1", timeout=2.0, tcp=False):
    """Send one query to host:port and return the DnsReply. UDP first;
    a truncated reply (TC, RFC 1035 §4.2.1: over 512 octets) is retried
    over TCP, as resolvers do."""
    query = dns_build_query(name, qtype)
    if tcp:
        return _dns_query_tcp(query, port, host, timeout)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(query, (host, port))
        while True:
            data, _ = s.recvfrom(65535)
            if data[:2] == query[:2]:
                break
    reply = dns_parse_reply(data)
    if reply.flags & 0x0200:
        return _dns_query_tcp(query, port, host, timeout)
    return reply


# --- DNS: dnsmasq as the test server ---------------------------------------


def _reverse_name(name):
    if name.endswith(".arpa"):
        return name
    return ipaddress.ip_address(name).reverse_pointer


def dnsmasq_argv(port, mx=None, a=None, aaaa=None, txt=None, ptr=None, cname=None,
                 local=("#",), extra=()):
    """dnsmasq command line answering only the given records on
    127.0.0.1:port, touching neither /etc/dnsmasq* nor port 53.

    mx: {domain: [(pref, host), ...]}; a / aaaa: {name: [addr, ...]};
    txt: {name: [str or (str, str...)]} (one record each; a tuple is one
    record of several strings); ptr: {addr or reverse name: host};
    cname: {alias: target}. `local` domains (default: all) get NXDOMAIN
    / NODATA for anything else instead of REFUSED. Forward records are
    made with --host-record, which also adds PTR records unless ptr
    names the address.
    """
    argv = [DNSMASQ, "--keep-in-foreground", "--port=%d" % port,
            "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv",
            "--no-hosts", "--no-poll", "--conf-file=/dev/null", "--pid-file=",
            "--log-facility=-", "--log-queries",
            "--user=" + pwd.getpwuid(os.getuid()).pw_name]
    for d in local:
        argv.append("--local=/%s/" % d)
    for domain, hosts in (mx or {}).items():
        for pref, host in hosts:
            argv.append("--mx-host=%s,%s,%d" % (domain, host, pref))
    names = {}
    for table in (a or {}), (aaaa or {}):
        for name, addrs in table.items():
            names.setdefault(name, []).extend([addrs] if isinstance(addrs, str) else addrs)
    for name, addrs in names.items():
        argv.append("--host-record=%s,%s" % (name, ",".join(addrs)))
    for name, records in (txt or {}).items():
        for rec in [records] if isinstance(records, str) else records:
            parts = [rec] if isinstance(rec, str) else list(rec)
            # One character-string holds at most 255 octets (RFC 1035
            # §3.3.14); long values such as DKIM keys are published split.
            parts = [p[i:i + 255] for p in parts for i in range(0, max(len(p), 1), 255)]
            argv.append("--txt-record=%s,%s" % (name, ",".join(parts)))
    for addr, host in (ptr or {}).items():
        argv.append("--ptr-record=%s,%s" % (_reverse_name(addr), host))
    for alias, target in (cname or {}).items():
        argv.append("--cname=%s,%s" % (alias, target))
    return argv + list(extra)


class DnsServer:
    """A running test DNS: .port, .server ("127.0.0.1@PORT", the value
    for dns_servers), .program (the dnsmasq Program), .query(name, type)."""

    def __init__(self, program, port):
        self.program, self.port = program, port
        self.host = "127.0.0.1"
        self.server = "%s@%d" % (self.host, port)

    def query(self, name, qtype, timeout=2.0):
        return dns_query(name, qtype, self.port, self.host, timeout)

    def stop(self):
        return self.program.stop()


def _dns_answers(port):
    try:
        dns_query("ready.invalid", "A", port, timeout=0.2)
        return True
    except OSError:
        return False


def start_dns(start, **records):
    """Start dnsmasq with `records` (see dnsmasq_argv) on a free port and
    wait until it answers a query. `start` is the start_program fixture
    (teardown and failure reports included), or outside pytest e.g.
    lambda argv, **kw: start_program(argv, logdir, **kw)."""
    port = free_port()
    prog = start(dnsmasq_argv(port, **records), ready=lambda: _dns_answers(port),
                 name="dnsmasq")
    return DnsServer(prog, port)


# --- SMTP --------------------------------------------------------------------


def smtp_read_reply(f):
    """Read one (possibly multi-line, RFC 5321 §4.2.1) reply from a
    binary file object; returns (code, [text lines])."""
    lines = []
    while True:
        line = f.readline(2048)
        if not line:
            raise ConnectionError("connection closed in SMTP reply %r" % lines)
        line = line.decode("utf-8", "replace").rstrip("\r\n")
        if len(line) < 3 or not line[:3].isdigit():
            raise ValueError("malformed SMTP reply line %r" % line)
        lines.append(line[4:])
        if len(line) == 3 or line[3] == " ":
            return int(line[:3]), lines


def smtp_greeting(port, host="127.0.0.1", timeout=5.0):
    """Connect, read the greeting and quit; returns (code, text lines)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        f = s.makefile("rb")
        reply = smtp_read_reply(f)
        try:
            s.sendall(b"QUIT\r\n")
            smtp_read_reply(f)
        except (OSError, ValueError):
            pass
        return reply
