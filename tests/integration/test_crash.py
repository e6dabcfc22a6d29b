"""test_crash.py - the crash test of issue 3: a 250 survives kill -9.

Several client threads push a load of messages (each with a unique
token in its Message-ID and body) into ternd, which delivers them to a
virtual maildir. While the load runs, ternd is killed with SIGKILL at
random moments (four times) and restarted each time; the clients
reconnect and resend every message that did not get its 250. At the end
the queue drains, and every token acknowledged with 250 must be in the
maildir at least once. Duplicates (a message committed and delivered
whose 250 was lost in the kill, then resent) are allowed and reported;
a single loss fails the test.
"""

import collections
import os
import random
import re
import signal
import socket
import threading
import time

import harness

MESSAGES = 3000          # total load (the issue asks for >= 2,000)
CLIENTS = 8              # client threads, one SMTP session each at a time
KILLS = 6                # SIGKILLs during the load
LOAD_DEADLINE = 60.0     # seconds for the whole load, kills included
DRAIN_DEADLINE = 25.0    # seconds for the queue to drain afterwards
FILLER = "".join("filler line %02d: the quick brown fox jumps over the lazy dog\r\n" % i
                 for i in range(12))
TOKEN_RE = re.compile(rb"^X-Crash-Token: (\S+)", re.M)


# --- a small raw SMTP client -------------------------------------------------


class Session:
    """One SMTP session (raw socket, so every reply is seen verbatim)."""

    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.f = self.sock.makefile("rb")
        code, lines = harness.smtp_read_reply(self.f)
        if code != 220:
            self.close()
            raise ConnectionError("greeting %d %s" % (code, lines))
        code, lines = self.cmd("EHLO client.test")
        if code != 250:
            self.close()
            raise ConnectionError("EHLO: %d %s" % (code, lines))

    def cmd(self, line):
        self.sock.sendall(line.encode() + b"\r\n")
        return harness.smtp_read_reply(self.f)

    def send(self, sender, rcpt, body):
        """MAIL, RCPT, DATA (pipelined) and the message; returns the
        final (code, text) — of DATA's end, or of the first refusal."""
        self.sock.sendall(("MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n" % (sender, rcpt)).encode())
        replies = [harness.smtp_read_reply(self.f) for _ in range(3)]
        for (code, lines), want in zip(replies, (250, 250, 354)):
            if code != want:
                if replies[2][0] == 354:  # cannot happen after a refusal, but be safe
                    self.sock.sendall(b".\r\n")
                    harness.smtp_read_reply(self.f)
                return code, " ".join(lines)
        self.sock.sendall(body.encode() + b".\r\n")
        code, lines = harness.smtp_read_reply(self.f)
        return code, " ".join(lines)

    def close(self):
        for c in (self.f, self.sock):
            try:
                c.close()
            except OSError:
                pass


def message(token, big=False):
    """A message carrying token; big ones (~150 KB) make batches whose
    write a kill can cut, so recovery meets torn tails too."""
    return ("From: load@client.test\r\nTo: box@example.test\r\n"
            "Subject: crash test %s\r\nMessage-ID: <%s@client.test>\r\n"
            "X-Crash-Token: %s\r\n\r\ntoken %s\r\n%s" % (
                token, token, token, token, FILLER * (200 if big else 1)))


# --- ternd -------------------------------------------------------------------


def crash_config(cfg):
    # a delivery cut by a kill may be deferred: retry soon
    return cfg.use_virtual_box(minimal_backoff_time="1s", maximal_backoff_time="2s",
                               queue_run_delay="1s")


def start_ternd(start_program, cfg):
    argv = [str(harness.tern_bin("ternd")), "-f", "-c", str(cfg)]
    return start_program(argv, ready=cfg.smtp_port, name="ternd", check_exit=False,
                         timeout=20.0)


def delivered_tokens(box):
    """token -> number of files in box/new (and cur/) holding it."""
    counts = collections.Counter()
    for sub in ("new", "cur"):
        d = box / sub
        if not d.is_dir():
            continue
        for p in d.iterdir():
            try:
                data = p.read_bytes()
            except FileNotFoundError:
                continue
            m = TOKEN_RE.search(data)
            counts[m.group(1).decode() if m else "<no token: %s>" % p.name] += 1
    return counts


def process_group_members(pgid):
    """PIDs (other than zombies) whose process group is pgid."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open("/proc/%s/stat" % d).read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(d))
    return pids


# --- the test ----------------------------------------------------------------


def test_kill9_under_load_loses_nothing(config_dir, start_program):
    box = crash_config(config_dir)
    port = config_dir.smtp_port
    prog = start_ternd(start_program, config_dir)
    runs = [prog]

    nonce = "%08x" % random.getrandbits(32)
    tokens = ["%s-%05d" % (nonce, i) for i in range(MESSAGES)]
    lock = threading.Lock()
    acked = {}                      # token -> (queue id text, attempt)
    attempts = collections.Counter()
    replies = collections.Counter()  # reply code -> count (non-250 final replies)
    bad = []                        # unexpected permanent replies
    stop = threading.Event()
    deadline = time.monotonic() + LOAD_DEADLINE

    def worker(mine):
        pending = collections.deque(mine)
        sess = None
        while pending and not stop.is_set() and time.monotonic() < deadline:
            if sess is None:
                try:
                    sess = Session(port, timeout=10.0)
                except (OSError, ConnectionError, ValueError):
                    time.sleep(0.02)
                    continue
            token = pending[0]
            with lock:
                attempts[token] += 1
            try:
                code, text = sess.send("load@client.test", "box@example.test",
                                       message(token, big=int(token[-5:]) % 20 == 7))
            except (OSError, ConnectionError, ValueError):
                sess.close()
                sess = None
                continue
            with lock:
                if code == 250:
                    acked[token] = text
                    pending.popleft()
                else:
                    replies[code] += 1
                    if code >= 500:
                        bad.append((token, code, text))
            if code != 250:
                if code >= 500:
                    stop.set()
                time.sleep(0.05)
                try:
                    sess.cmd("RSET")
                except (OSError, ConnectionError, ValueError):
                    sess.close()
                    sess = None
        if sess is not None:
            try:
                sess.cmd("QUIT")
            except (OSError, ConnectionError, ValueError):
                pass
            sess.close()

    threads = [threading.Thread(target=worker, args=(tokens[i::CLIENTS],), daemon=True)
               for i in range(CLIENTS)]
    for t in threads:
        t.start()

    # Kill when the acknowledged count crosses random thresholds, after a
    # random extra delay, so the kills land at arbitrary points: mid-DATA,
    # mid-commit, mid-delivery.
    rng = random.Random()
    thresholds = sorted(rng.sample(range(MESSAGES // 10, MESSAGES * 9 // 10, 50), KILLS))
    kill_log = []
    leftovers = []
    try:
        for threshold in thresholds:
            while True:
                with lock:
                    n = len(acked)
                if n >= threshold or stop.is_set() or time.monotonic() > deadline:
                    break
                time.sleep(0.002)
            if stop.is_set() or time.monotonic() > deadline:
                break
            time.sleep(rng.uniform(0, 0.05))
            with lock:
                at = len(acked)
            pgid = prog.pid
            prog.signal(signal.SIGKILL)
            prog.proc.wait(timeout=10)
            kill_log.append(at)
            # A killed ternd must not leave helpers behind that hold the
            # listening socket or the queue lock; give them a moment.
            try:
                harness.wait_for(lambda: not process_group_members(pgid), timeout=5.0,
                                 what="ternd's children to exit after SIGKILL")
            except TimeoutError:
                leftovers.append(process_group_members(pgid))
            time.sleep(rng.uniform(0, 0.2))
            prog = start_ternd(start_program, config_dir)
            runs.append(prog)
        for t in threads:
            t.join(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=15)

    # The last instance must shut down cleanly at teardown (sanitizer
    # reports at exit included).
    prog.check_exit = True

    assert not bad, "permanent refusals under load: %r" % bad[:10]
    assert len(kill_log) == KILLS, "only %d of %d kills happened (acked %d)" % (
        len(kill_log), KILLS, len(acked))
    assert len(acked) == MESSAGES, "load did not finish in %.0fs: %d of %d acknowledged" % (
        LOAD_DEADLINE, len(acked), MESSAGES)
    assert prog.alive, "ternd died after the last restart\n" + prog.logs()

    # Drain: every acknowledged token delivered, the queue empty.
    def drained():
        counts = delivered_tokens(box)
        if any(counts[t] == 0 for t in acked):
            return False
        rc, out, _ = harness.run_tern("queue", "list", config_dir=config_dir)
        return rc == 0 and out == "Mail queue is empty\n" and counts

    try:
        counts = harness.wait_for(drained, timeout=DRAIN_DEADLINE, interval=0.25,
                                  what="the queue to drain")
    except TimeoutError:
        counts = delivered_tokens(box)
    lost = sorted(t for t in acked if counts[t] == 0)
    strays = sorted(t for t in counts if t not in attempts)
    dups = sum(c - 1 for t, c in counts.items() if c > 1)
    resent = sum(c - 1 for c in attempts.values() if c > 1)
    torn = sum(p.stderr().count("ignoring the rest of this segment") for p in runs)
    report = ("crash test: %d messages acknowledged, %d kills at acked=%s, %d resent, "
              "%d delivered files, %d duplicates, %d lost, non-250 replies %s, "
              "%d torn segment tails at recovery" % (
                  len(acked), len(kill_log), kill_log, resent, sum(counts.values()), dups,
                  len(lost), dict(replies), torn))
    print(report)
    assert not lost, "%s\nlost (acknowledged, never delivered): %s\nqueue:\n%s" % (
        report, lost[:20], harness.run_tern("queue", "list", config_dir=config_dir)[1][:3000])
    assert not strays, "files that are no message of this test: %s" % strays[:10]
    rc, out, _ = harness.run_tern("queue", "list", config_dir=config_dir)
    assert out == "Mail queue is empty\n", "queue did not drain:\n" + out[:3000]
    assert not leftovers, "processes of a SIGKILLed ternd still running: %s" % leftovers
