"""test_faults.py - fault injection: no 250 for a message that is not
durable (issue 3, "fsync error -> 451 4.3.0", "free-space watermark ->
452 4.3.1").

* fsync failure: ternd runs with the LD_PRELOAD shim
  build/tests/faultinject.so (tests/tools/preload/faultinject.c), which
  makes fsync()/fdatasync() on the queue's seg/ files fail with EIO while
  a flag file exists. Before the flag: 250; with it: every DATA, also
  from concurrent sessions, gets "451 4.3.0 Error: queue file write
  error", never 250, and no segment is fsynced again after it failed;
  after the flag is gone: 250 again. After a restart the refused
  messages are nowhere (not delivered, not in the queue) and every
  accepted one is delivered exactly once.
* write failure: the same shim makes pwritev() on seg/ files fail with
  EIO (-> 451 4.3.0) or ENOSPC (-> 452 4.3.1).
* disk full: the queue lives on a small tmpfs (root only; skipped
  otherwise), filled by the queue's own mail and then by a filler file:
  "452 4.3.1 Insufficient system storage" from then on, ternd stays up,
  and it accepts again once space is freed; everything accepted is
  delivered, nothing refused is.
* queue_minfree: on the same kind of tmpfs, the watermark refuses with
  452 4.3.1 before anything is written (no write error in the log, free
  space still above the watermark), and accepts again after space is
  freed.
* regressions for two bugs these tests found: a failed "recipient done"
  journal write must not make the scheduler re-deliver at once in a loop
  (it now backs off in memory); and once the queue's own mail reaches
  queue_minfree, delivering it must free its space (the empty active
  segment is retired and reclaimed).
"""

import errno
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid

import pytest

import harness

R451 = "451 4.3.0 Error: queue file write error"
R452 = "452 4.3.1 Insufficient system storage"
TOKEN_RE = re.compile(rb"^X-Fault-Token: (\S+)", re.M)


# --- SMTP client ---------------------------------------------------------------


class Session:
    """One SMTP session over a raw socket; replies as "CODE text"."""

    def __init__(self, port, timeout=20.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.f = self.sock.makefile("rb")
        assert self.reply().startswith("220 ")
        assert self.cmd("EHLO client.test").startswith("250")

    def reply(self):
        code, lines = harness.smtp_read_reply(self.f)
        return "%d %s" % (code, lines[-1])

    def cmd(self, line):
        self.sock.sendall(line.encode() + b"\r\n")
        return self.reply()

    def send(self, token, size=0, rcpt="box@example.test"):
        """One message carrying token (and about size bytes of filler);
        returns the reply to the end of DATA."""
        assert self.cmd("MAIL FROM:<fault@client.test>").startswith("250 ")
        assert self.cmd("RCPT TO:<%s>" % rcpt).startswith("250 ")
        assert self.cmd("DATA").startswith("354 ")
        line = b"x" * 998 + b"\r\n"
        body = (("From: fault@client.test\r\nTo: %s\r\nSubject: fault %s\r\n"
                 "Message-ID: <%s@client.test>\r\nX-Fault-Token: %s\r\n\r\n"
                 % (rcpt, token, token, token)).encode() + line * (size // len(line)))
        self.sock.sendall(body + b".\r\n")
        return self.reply()

    def close(self):
        try:
            self.sock.sendall(b"QUIT\r\n")
            self.reply()
        except (OSError, ConnectionError, ValueError, AssertionError):
            pass
        self.f.close()
        self.sock.close()


class Tracker:
    """Sends messages with unique tokens and files each under the reply
    it got; answers which were delivered."""

    def __init__(self, cfg, box):
        self.cfg, self.box = cfg, box
        self.accepted, self.refused = [], []   # tokens
        self.replies = []                      # (token, reply) in order
        self.lock = threading.Lock()

    def token(self):
        return uuid.uuid4().hex[:16]

    def send(self, sess, size=0):
        token = self.token()
        reply = sess.send(token, size)
        with self.lock:
            self.replies.append((token, reply))
            (self.accepted if reply.startswith("250 ") else self.refused).append(token)
        return reply

    def send_new(self, n=1, size=0):
        sess = Session(self.cfg.smtp_port)
        try:
            return [self.send(sess, size) for _ in range(n)]
        finally:
            sess.close()

    def delivered(self):
        counts = {}
        for sub in ("new", "cur"):
            d = self.box / sub
            if d.is_dir():
                for p in d.iterdir():
                    m = TOKEN_RE.search(p.read_bytes())
                    key = m.group(1).decode() if m else "<no token: %s>" % p.name
                    counts[key] = counts.get(key, 0) + 1
        return counts

    def wait_delivered(self, tokens, timeout=20.0):
        harness.wait_for(lambda: all(t in self.delivered() for t in tokens), timeout=timeout,
                         what="delivery of %d messages" % len(tokens))

    def check_final(self):
        """Every accepted message delivered exactly once, no refused one."""
        counts = self.delivered()
        missing = [t for t in self.accepted if t not in counts]
        dups = {t: c for t, c in counts.items() if c > 1}
        ghosts = [t for t in self.refused if t in counts]
        strays = [t for t in counts if t not in self.accepted and t not in self.refused]
        assert not missing, "accepted (250) but never delivered: %s" % missing
        assert not ghosts, "refused (4xx) but delivered anyway: %s" % ghosts
        assert not dups, "delivered more than once: %s" % dups
        assert not strays, "unknown files in the maildir: %s" % strays


# --- ternd ---------------------------------------------------------------------


def fault_config(cfg, **extra):
    return cfg.use_virtual_box(**extra)


def preload_env(cfg):
    """LD_PRELOAD for the shim (after libasan in a sanitizer build, which
    insists on coming first) and the shim's control variables."""
    shim = harness.tool_bin("faultinject.so")
    if not shim.exists():
        pytest.skip("%s not built (make tests)" % shim)
    libs = []
    ldd = subprocess.run(["ldd", str(harness.tern_bin("ternd"))], capture_output=True, text=True)
    m = re.search(r"^\s*libasan\.so\S*\s+=>\s+(\S+)", ldd.stdout, re.M)
    if m:
        libs.append(m.group(1))
    libs.append(str(shim))
    # ternd runs as mail_owner: let it append to the shim's log
    (cfg.path / "faults.log").touch()
    harness.give_to_mail_owner(cfg.path / "faults.log")
    return {
        "LD_PRELOAD": " ".join(libs),
        "TERN_FAULT_FSYNC": str(cfg.path / "fail-fsync"),
        "TERN_FAULT_WRITE": str(cfg.path / "fail-write"),
        "TERN_FAULT_MATCH": "/seg/",
        "TERN_FAULT_LOG": str(cfg.path / "faults.log"),
    }


def start_ternd(start_program, cfg, env=None):
    argv = [str(harness.tern_bin("ternd")), "-f", "-c", str(cfg)]
    prog = start_program(argv, ready=cfg.smtp_port, name="ternd", env=env, timeout=20.0)
    cfg.runs = getattr(cfg, "runs", []) + [prog]
    return prog


def ternd_log(cfg):
    return "".join(p.stderr() for p in getattr(cfg, "runs", []))


def faults_fired(cfg):
    """The shim's log: [(call, path, errno)]."""
    try:
        text = (cfg.path / "faults.log").read_text()
    except FileNotFoundError:
        return []
    return [tuple(line.rsplit(" ", 2)) for line in text.splitlines()]


def queue_empty(cfg):
    rc, out, err = harness.run_tern("queue", "list", config_dir=cfg)
    return rc == 0 and out == "Mail queue is empty\n"


def restart_and_settle(start_program, cfg, prog, env=None, settle=1.5):
    """Stop ternd cleanly, start it again (the queue is rebuilt from the
    segments), give the scheduler time to deliver anything it found."""
    assert prog.stop() in (0, -signal.SIGTERM), prog.logs()
    prog = start_ternd(start_program, cfg, env=env)
    time.sleep(settle)
    harness.wait_for(lambda: queue_empty(cfg), timeout=15, what="an empty queue after restart")
    return prog


# --- fsync and write failures (LD_PRELOAD shim) ---------------------------------


def test_fsync_failure_gives_451_never_250(config_dir, start_program):
    box = fault_config(config_dir)
    env = preload_env(config_dir)
    flag = config_dir.path / "fail-fsync"
    prog = start_ternd(start_program, config_dir, env=env)
    t = Tracker(config_dir, box)

    # Before: accepted and delivered.
    replies = t.send_new(3)
    assert all(r.startswith("250 2.0.0 Ok: queued as ") for r in replies), replies
    t.wait_delivered(t.accepted)
    harness.wait_for(lambda: queue_empty(config_dir), what="an empty queue")
    assert faults_fired(config_dir) == []

    # fsync fails: every DATA gets 451 4.3.0, one session after another...
    flag.touch()
    sess = Session(config_dir.smtp_port)
    for _ in range(4):
        assert t.send(sess) == R451
    # ...the session goes on after a refusal...
    assert sess.cmd("NOOP") == "250 2.0.0 Ok"
    sess.close()
    # ...and concurrent sessions (whole batches) fail alike.
    errors = []

    def client():
        try:
            t.send_new(3)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert not errors, errors
    during = t.replies[3:]
    assert len(during) == 16
    assert [r for _, r in during] == [R451] * 16, during
    fired = faults_fired(config_dir)
    assert fired, "the shim never failed an fsync"
    assert all(call in ("fdatasync", "fsync") and "/seg/" in path for call, path, _ in fired), fired
    # A segment whose fsync failed is abandoned: never fsynced again.
    paths = [path for _, path, _ in fired]
    assert len(paths) == len(set(paths)), "a segment was fsynced again after a failure: %s" % paths
    log = ternd_log(config_dir)
    assert re.search(r"warning: queue: fdatasync segment [0-9A-F]{16}: Input/output error", log), log
    assert "abandoned after a write error" in log
    assert prog.alive

    # fsync works again: 250 and delivered.
    flag.unlink()
    replies = t.send_new(3)
    assert all(r.startswith("250 2.0.0 Ok: queued as ") for r in replies), replies
    t.wait_delivered(t.accepted)
    harness.wait_for(lambda: queue_empty(config_dir), what="an empty queue")
    assert len(t.refused) == 16 and len(t.accepted) == 6

    # A restart rebuilds the queue from disk: nothing refused comes back.
    restart_and_settle(start_program, config_dir, prog, env=env)
    t.check_final()


@pytest.mark.parametrize("err, expect", [("EIO", R451), ("ENOSPC", R452)])
def test_write_failure(config_dir, start_program, err, expect):
    box = fault_config(config_dir)
    env = dict(preload_env(config_dir), TERN_FAULT_WRITE_ERRNO=str(getattr(errno, err)))
    flag = config_dir.path / "fail-write"
    prog = start_ternd(start_program, config_dir, env=env)
    t = Tracker(config_dir, box)

    assert all(r.startswith("250 ") for r in t.send_new(2))
    # (delivered first: a failing journal write after a delivery is
    # another matter, see test_journal_failure_no_redelivery_storm)
    t.wait_delivered(t.accepted)
    harness.wait_for(lambda: queue_empty(config_dir), what="an empty queue")
    flag.touch()
    assert t.send_new(3) == [expect] * 3
    fired = faults_fired(config_dir)
    assert fired and all(call in ("pwritev", "pwrite") and e == str(getattr(errno, err))
                         for call, _, e in fired), fired
    flag.unlink()
    assert all(r.startswith("250 ") for r in t.send_new(2))
    t.wait_delivered(t.accepted)
    restart_and_settle(start_program, config_dir, prog, env=env)
    t.check_final()


# --- a real full disk: tmpfs ------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path):
    """Factory: tmpfs(size) mounts a tmpfs of `size` (mount(8) syntax)
    and returns its path; unmounted at teardown, also after a failure.
    Requested before config_dir/start_program, so ternd is stopped first."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounts = []

    def mount(size):
        path = tmp_path / ("tmpfs%d" % len(mounts))
        path.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs",
                            str(path)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip("cannot mount a tmpfs: %s" % r.stderr.strip())
        mounts.append(path)
        return path

    yield mount
    for path in reversed(mounts):
        for _ in range(50):
            if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path, name="filler"):
    """Write a file until the file system is full; returns its path."""
    p = path / name
    chunk = b"\0" * 65536
    with open(p, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    return p


def pause_delivery(cfg, on=True):
    rc, out, err = harness.run_tern("delivery", "pause" if on else "resume", config_dir=cfg)
    assert rc == 0, (out, err)


def test_disk_full(tmpfs, config_dir, start_program):
    mnt = tmpfs("8m")
    box = fault_config(config_dir, queue_directory=str(mnt / "queue"))
    prog = start_ternd(start_program, config_dir)
    pause_delivery(config_dir)   # the queue must keep its mail to fill up
    t = Tracker(config_dir, box)

    # Fill the queue with its own mail until the first refusal.
    sess = Session(config_dir.smtp_port)
    for _ in range(40):
        reply = t.send(sess, size=300 * 1024)
        if not reply.startswith("250 "):
            break
    assert reply == R452, t.replies
    assert 10 <= len(t.accepted) < 30, t.replies
    # Still full for messages of that size; the session goes on.
    for _ in range(3):
        assert t.send(sess, size=300 * 1024) == R452
    assert sess.cmd("NOOP") == "250 2.0.0 Ok"
    log = ternd_log(config_dir)
    assert "No space left on device" in log, log

    # Full to the last byte: even a small message is refused.
    filler = fill(mnt)
    for _ in range(3):
        assert t.send(sess) == R452
    sess.close()
    assert t.send_new(2) == [R452] * 2
    assert prog.alive

    # Space again: accepted again.
    filler.unlink()
    replies = t.send_new(3)
    assert all(r.startswith("250 2.0.0 Ok: queued as ") for r in replies), replies

    # Everything accepted is delivered, nothing refused, also after a restart.
    pause_delivery(config_dir, on=False)
    t.wait_delivered(t.accepted, timeout=30)
    harness.wait_for(lambda: queue_empty(config_dir), what="an empty queue")
    restart_and_settle(start_program, config_dir, prog)
    t.check_final()


def test_queue_minfree_watermark(tmpfs, config_dir, start_program):
    mnt = tmpfs("8m")
    minfree = 5 * 1024 * 1024
    box = fault_config(config_dir, queue_directory=str(mnt / "queue"), queue_minfree=str(minfree))
    prog = start_ternd(start_program, config_dir)
    pause_delivery(config_dir)
    t = Tracker(config_dir, box)

    # The queue's own mail reaches the watermark: refused before writing.
    sess = Session(config_dir.smtp_port)
    for _ in range(40):
        reply = t.send(sess, size=200 * 1024)
        if not reply.startswith("250 "):
            break
    assert reply == R452, t.replies
    assert 5 <= len(t.accepted) <= 20, t.replies
    free = free_bytes(mnt)
    assert free >= minfree, "refused only below the watermark: %d free" % free
    for _ in range(2):
        assert t.send(sess, size=200 * 1024) == R452
    log = ternd_log(config_dir)
    assert "abandoned" not in log and "write to segment" not in log, log
    assert free_bytes(mnt) == free, "a refused message was written"

    # The watermark also counts space others take: a filler leaving less
    # than queue_minfree free refuses small messages...
    filler = mnt / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * (free - minfree + 4096))
    assert t.send(sess) == R452
    # ...and removing it (plus the margin) lets them in again.
    filler.unlink()
    assert t.send(sess).startswith("250 2.0.0 Ok: queued as ")
    sess.close()
    assert prog.alive

    pause_delivery(config_dir, on=False)
    t.wait_delivered(t.accepted, timeout=30)
    harness.wait_for(lambda: queue_empty(config_dir), what="an empty queue")
    restart_and_settle(start_program, config_dir, prog)
    t.check_final()


def test_journal_failure_no_redelivery_storm(config_dir, start_program):
    """A delivery whose "recipient done" record cannot be written must be
    retried later (at-least-once), but not re-delivered at once over and
    over while the queue cannot write: that floods the mailbox with
    duplicates (Postfix defers the message with backoff instead)."""
    box = fault_config(config_dir)
    env = preload_env(config_dir)
    flag = config_dir.path / "fail-write"
    start_ternd(start_program, config_dir, env=env)
    t = Tracker(config_dir, box)
    pause_delivery(config_dir)
    assert t.send_new(1)[0].startswith("250 ")
    flag.touch()
    pause_delivery(config_dir, on=False)
    t.wait_delivered(t.accepted)
    time.sleep(3)
    during = t.delivered().get(t.accepted[0], 0)
    log = ternd_log(config_dir)
    assert "cannot update queue: queue file write error" in log, log
    flag.unlink()
    assert during <= 2, "delivered %d times in 3 s while the queue could not record it" % during



def test_minfree_recovers_when_queue_mail_is_delivered(tmpfs, config_dir, start_program):
    """The queue's own mail reaches queue_minfree; once it has all been
    delivered, its space must be free again and mail accepted."""
    mnt = tmpfs("8m")
    minfree = 5 * 1024 * 1024
    box = fault_config(config_dir, queue_directory=str(mnt / "queue"), queue_minfree=str(minfree))
    start_ternd(start_program, config_dir)
    pause_delivery(config_dir)
    t = Tracker(config_dir, box)
    sess = Session(config_dir.smtp_port)
    for _ in range(40):
        reply = t.send(sess, size=200 * 1024)
        if not reply.startswith("250 "):
            break
    assert reply == R452, t.replies
    refused_free = free_bytes(mnt)
    pause_delivery(config_dir, on=False)
    t.wait_delivered(t.accepted, timeout=30)
    harness.wait_for(lambda: queue_empty(config_dir), what="an empty queue")
    # Dead records are reclaimed when the commit thread is idle.
    try:
        harness.wait_for(lambda: free_bytes(mnt) > refused_free + 1024 * 1024, timeout=5,
                         what="the delivered mail's queue space to be freed")
    finally:
        reply = t.send(sess, size=200 * 1024)
        sess.close()
    assert reply.startswith("250 2.0.0 Ok: queued as "), (
        "queue empty, %d bytes free, still: %s" % (free_bytes(mnt), reply))
