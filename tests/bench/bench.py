#!/usr/bin/python3
"""make bench: Tern vs Postfix, durable ingest and relay, on this machine.

    /usr/bin/python3 tests/bench/bench.py --build $PWD/build [options]

Measures, in one run (see tests/bench/README.md for what each number means):

1. the disk's durable-write limit: build/tests/fsyncbench appending 5 KiB
   records, one write+fdatasync per record and 20 records per
   write+fdatasync (plus 20 x 100 KiB, the yardstick for 100 KiB mail),
   in a file on the same filesystem as both queues;
2. ingest rate (messages/s) of ternd and of a private Postfix instance,
   both delivering to discard, both acknowledging only durable mail,
   driven by Postfix's smtp-source for 1, 20 and 100 sessions x 5 KiB and
   100 KiB messages, run alternately, median of --reps runs;
3. relay end to end: smtp-source -> ternd / Postfix -> smtp-sink (each
   server its own sink, relayhost = [127.0.0.1]:port), 20 and 100
   sessions x 5 KiB, messages/s from the first message submitted until the
   sink has the last one, plus the queue length sampled during the runs;
4. ternd relaying to a sink (tempfail_sink_main) that answers 450 to 30% of
   the recipients on their first attempt: queue growth and recovery time,
   with short backoff settings;
5. ternd's RSS with 1,000 idle SMTP sessions.

--only ingest|relay|tempfail (comma-separated) runs a subset; ingest
includes 1 and 5. Exits 1 when a run lost mail, delivered it twice, left
it queued or failed.

Prints a table to stdout and writes JSON (default BUILD/bench.json).
Needs root (Postfix's master runs as root; ternd drops to mail_owner).
Stdlib only; nothing outside the temporary directory is touched, and every
process started is stopped by its PID at the end, also on errors.
"""

import argparse
import atexit
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

# the private Postfix's master.cf, shared with the interop tests
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from pfmaster import private_master_cf  # noqa: E402

SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"
POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
SENDER = "bench@client.example"
RECIPIENT = "user@dest.example"  # smtp-source -N makes it 1user@..., 2user@...

# (sessions, message length) in the order they run.
PROFILES = [(1, 5120), (20, 5120), (100, 5120), (1, 102400), (20, 102400), (100, 102400)]
TARGET_PROFILE = (20, 5120)
TARGET_RATIO = 10.0

# Relay end to end (smtp-source -> server -> sink): (sessions, length).
RELAY_PROFILES = [(20, 5120), (100, 5120)]
RELAY_TARGET_RATIO = 5.0
QUEUE_SAMPLE_S = 0.5  # how often the queue length is sampled during a relay run
# Relay to a sink that tempfails a share of the RCPTs once (Tern only).
TEMPFAIL_PROFILE = (20, 5120)
TEMPFAIL_PERCENT = 30
TEMPFAIL_SETTINGS = {"minimal_backoff_time": "2s", "maximal_backoff_time": "4s",
                     "queue_run_delay": "1s"}
TEMPFAIL_HOLD_S = 0.5  # the sink keeps tempfailing a recipient this long after its first 450
# A retry sooner than this after the first 450 ignores minimal_backoff_time
# (retry times are whole seconds, in Postfix too: up to 1 s less is normal).
TEMPFAIL_EARLY_S = 1.0

PROBLEMS = []  # things that went wrong or look odd; printed and in the JSON


def problem(text):
    PROBLEMS.append(text)
    print("bench: PROBLEM: " + text, file=sys.stderr, flush=True)


def note(text):
    print("bench: " + text, file=sys.stderr, flush=True)


# ---- small helpers -----------------------------------------------------------


def ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_ports_given = set()


def free_port():
    """A TCP port free on 127.0.0.1, below the ephemeral range (so
    smtp-source's own outgoing connections cannot take it)."""
    low = ephemeral_low()
    start = 20000 if low > 21024 else 1024
    for _ in range(500):
        port = random.randrange(start, max(start + 1, low))
        if port in _ports_given:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        _ports_given.add(port)
        return port
    raise RuntimeError("no free loopback port found")


def wait_port(port, timeout, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.settimeout(5)
                return s.recv(512).startswith(b"220")
        except OSError:
            time.sleep(0.1)
    return False


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours is dead too.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def proc_status(pid, field):
    """An integer field of /proc/PID/status (kB for Vm*), or None."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def proc_cpu_seconds(pid):
    """utime+stime of a process (all threads), in seconds."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def proc_ctx_switches(pid):
    """Voluntary + involuntary context switches over all threads."""
    n = 0
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                    for line in f:
                        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                            n += int(line.split()[1])
            except (OSError, ValueError):
                pass
    except OSError:
        return None
    return n


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except (OSError, ValueError):
        return None


def system_cpu():
    """(busy, total) jiffies over all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    total = sum(vals[:8])
    return total - idle, total


def fs_of(path):
    """(device, mount point, fs type, options) of the filesystem holding path."""
    path = os.path.realpath(path)
    best = ("", "", "", "")
    try:
        with open("/proc/mounts") as f:
            for line in f:
                dev, mnt, typ, opts = line.split()[:4]
                mnt = mnt.replace("\\040", " ")
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[1]):
                    best = (dev, mnt, typ, opts)
    except OSError:
        pass
    return best


def fmt_rate(v):
    if v is None:
        return "-"
    if v >= 100:
        return "%.0f" % v
    return "%.1f" % v


def fmt_ratio(v):
    return "-" if v is None else "%.1fx" % v


def fmt_pct(v):
    return "-" if v is None else "%.1f%%" % (100 * v)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def run_smtp_source(port, sessions, length, count, timeout):
    """One smtp-source run; returns a dict with the wall time and the exit."""
    argv = [SMTP_SOURCE, "-s", str(sessions), "-l", str(length), "-m", str(count),
            "-d", "-N", "-f", SENDER, "-t", RECIPIENT, "127.0.0.1:%d" % port]
    cpu0 = system_cpu()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = "timeout", e.stdout or b"", e.stderr or b""
    elapsed = time.monotonic() - t0
    cpu1 = system_cpu()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = (cpu1[0] - cpu0[0]) / max(1, cpu1[1] - cpu0[1])
    return {
        "argv": argv, "messages": count, "seconds": round(elapsed, 4),
        "msg_per_s": round(count / elapsed, 1) if rc == 0 else None,
        "exit": rc, "stderr": err.decode("utf-8", "replace").strip()[-2000:],
        "cpu_busy": round(busy, 3),
        "client_cpu_s": round(ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime, 2),
    }


# ---- ternd -------------------------------------------------------------------


class Tern:
    name = "tern"

    def __init__(self, build, workdir, sub="tern", overrides=None):
        self.build = build
        self.dir = os.path.join(workdir, sub)
        self.overrides = dict(overrides or {})
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.proc = None
        self.logpath = os.path.join(self.dir, "ternd.stderr")
        self.logfile = None
        self.log_offset = 0
        self.accepted_total = 0

    @property
    def queue_dir(self):
        return os.path.join(self.dir, "queue")

    def write_config(self):
        owner = "tern" if os.geteuid() == 0 else _user_name()  # never root: ternd refuses it
        conf = {
            "listen_smtp": "127.0.0.1:%d" % self.port,
            "myhostname": "bench.local",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "default_transport": "discard",
            "relay_transport": "discard",
            "queue_directory": self.queue_dir,
            "data_directory": os.path.join(self.dir, "data"),
            "mail_owner": owner,
            "alias_maps": "",
            "local_recipient_maps": "",
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_connection_rate_limit": "0",
            "maillog_file": os.path.join(self.dir, "maillog"),
        }
        conf.update(self.overrides)
        with open(os.path.join(self.dir, "tern.conf"), "w") as f:
            f.write("# make bench: %s\n" % ("relay, see overrides below" if self.overrides
                                             else "receive-only, everything to discard"))
            f.write("".join("%s = %s\n" % kv for kv in conf.items()))
        p = subprocess.run([os.path.join(self.build, "bin", "tern"), "conf", "-c", self.dir, "-n"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if p.returncode != 0 or p.stderr.strip():
            raise RuntimeError("tern conf -n rejects the bench config: %s"
                               % p.stderr.decode("utf-8", "replace").strip())

    def start(self):
        self.write_config()
        self.logfile = open(self.logpath, "ab")
        self.proc = subprocess.Popen(
            [os.path.join(self.build, "bin", "ternd"), "-f", "-c", self.dir],
            stdin=subprocess.DEVNULL, stdout=self.logfile, stderr=subprocess.STDOUT,
            start_new_session=True)
        if not wait_port(self.port, 20, self.proc):
            raise RuntimeError("ternd did not start (exit %s); log:\n%s"
                               % (self.proc.poll(), self.log_tail()))
        self.log_offset = os.path.getsize(self.logpath)

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=30):
        try:
            with open(self.logpath, "rb") as f:
                return b"".join(f.readlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return ""

    def new_log(self):
        """Log lines written since the last call."""
        with open(self.logpath, "rb") as f:
            f.seek(self.log_offset)
            data = f.read()
        # Only whole lines; the rest is read next time.
        cut = data.rfind(b"\n") + 1
        self.log_offset += cut
        return data[:cut].decode("utf-8", "replace").splitlines()

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                problem("ternd (pid %d) did not stop within 30 s of SIGTERM; killed" % self.proc.pid)
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        if rc not in (0, -signal.SIGTERM):
            problem("ternd (pid %d) exited with status %s" % (self.proc.pid, rc))
        self.proc = None
        if self.logfile:
            self.logfile.close()
            self.logfile = None

    def queue_len(self):
        """Messages in the queue as `tern queue list --json` sees them (it
        reads the queue read-only, without asking ternd), or None."""
        try:
            p = subprocess.run([os.path.join(self.build, "bin", "tern"), "queue", "-c", self.dir,
                                "list", "--json"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=30)
        except subprocess.TimeoutExpired:
            return None
        if p.returncode != 0:
            self.queue_list_errors = getattr(self, "queue_list_errors", 0) + 1
            if self.queue_list_errors == 1:
                problem("tern queue list --json failed (exit %s): %s"
                        % (p.returncode, p.stderr.decode("utf-8", "replace").strip()[:300]))
            return None
        return sum(1 for l in p.stdout.splitlines() if l.startswith(b"{"))

    def before_run(self):
        self.new_log()  # skip whatever came before
        self.cpu0 = proc_cpu_seconds(self.pid)
        self.cs0 = proc_ctx_switches(self.pid)

    def after_run(self, run):
        """Check the server side of a run: every message logged as queued,
        no warnings; then wait for delivery to drain the queue."""
        cpu1 = proc_cpu_seconds(self.pid)
        cs1 = proc_ctx_switches(self.pid)
        if self.cpu0 is not None and cpu1 is not None:
            run["server_cpu_s"] = round(cpu1 - self.cpu0, 2)
            run["server_cpu_us_per_msg"] = round(1e6 * (cpu1 - self.cpu0) / run["messages"])
        if self.cs0 is not None and cs1 is not None:
            run["server_ctx_switches_per_msg"] = round((cs1 - self.cs0) / run["messages"], 1)
        want = run["messages"]
        queued = sent = 0
        odd = []
        deadline = time.monotonic() + 120
        while True:
            for line in self.new_log():
                if line.endswith("(queue active)"):
                    queued += 1
                elif "status=sent" in line:
                    sent += 1
                elif re.search(r"\b(warning|error|fatal|panic):", line) or "status=deferred" in line \
                        or "status=bounced" in line or "reject:" in line:
                    odd.append(line)
            if sent >= queued >= want or time.monotonic() > deadline or not self.alive():
                break
            time.sleep(0.2)
        run["server_queued"] = queued
        run["server_delivered"] = sent
        if odd:
            run["server_log_problems"] = odd[:20]
            problem("ternd logged %d warning/error lines during %s; first: %s"
                    % (len(odd), run["label"], odd[0]))
        if not self.alive():
            problem("ternd died during %s (exit %s); log tail:\n%s"
                    % (run["label"], self.proc.returncode, self.log_tail()))
        if run["exit"] == 0 and queued != want:
            problem("%s: smtp-source saw %d x 250 but ternd logged %d messages queued"
                    % (run["label"], want, queued))
        if queued != sent:
            problem("%s: ternd queued %d messages but delivered %d within 120 s"
                    % (run["label"], queued, sent))
        self.accepted_total += queued


def _user_name():
    import pwd
    return pwd.getpwuid(os.geteuid()).pw_name


# ---- Postfix -----------------------------------------------------------------


class Postfix:
    name = "postfix"
    QUEUE_SUBDIRS = ("maildrop", "incoming", "active", "deferred", "hold")

    def __init__(self, workdir, sub="postfix", overrides=None):
        self.dir = os.path.join(workdir, sub)
        self.overrides = dict(overrides or {})
        self.conf = os.path.join(self.dir, "conf")
        self.queue_dir = os.path.join(self.dir, "queue")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.started = False
        self.master_pid = None

    def master_cf(self):
        """/etc/postfix/master.cf without chroot, smtpd on our port, no pipe
        services (tests/integration/pfmaster.py, shared with the interop tests)."""
        return private_master_cf(self.port)

    def main_cf(self):
        conf = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue_dir,
            "data_directory": self.data,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "myhostname": "bench.local",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "default_transport": "discard",
            "relay_transport": "discard",
            "local_transport": "discard",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_connection_rate_limit": "0",
            "default_process_limit": "200",
        }
        conf.update(self.overrides)
        return "".join(
            ["# make bench: a private Postfix instance, %s\n"
             % ("relay, see the bench" if self.overrides else "receive-only, to discard"),
             "# no maillog_file: postlogd makes smtpd hang on this machine\n"]
            + ["%s = %s\n" % kv for kv in conf.items()])

    def start(self):
        for d in (self.dir, self.conf, self.queue_dir, self.data):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o755)
        shutil.chown(self.data, user="postfix")
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write(self.master_cf())
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write(self.main_cf())
        p = subprocess.run([POSTFIX, "-c", self.conf, "start"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        self.started = True  # even a failed start may have left a master
        self.master_pid = self._read_master_pid()
        if p.returncode != 0:
            raise RuntimeError("postfix -c %s start failed: %s"
                               % (self.conf, p.stdout.decode("utf-8", "replace").strip()))
        if not wait_port(self.port, 30):
            raise RuntimeError("Postfix's smtpd does not answer on 127.0.0.1:%d" % self.port)
        self.master_pid = self._read_master_pid()

    def _read_master_pid(self):
        try:
            with open(os.path.join(self.queue_dir, "pid", "master.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return self.master_pid

    def alive(self):
        return self.master_pid is not None and pid_alive(self.master_pid)

    def stop(self):
        if not self.started:
            return
        self.started = False
        self.master_pid = self._read_master_pid()
        subprocess.run([POSTFIX, "-c", self.conf, "stop"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        if self.master_pid is None:
            return
        deadline = time.monotonic() + 15
        while pid_alive(self.master_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(self.master_pid):
            problem("Postfix master (pid %d) still running 15 s after 'postfix stop'; aborting it"
                    % self.master_pid)
            subprocess.run([POSTFIX, "-c", self.conf, "abort"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
            time.sleep(1)
            if pid_alive(self.master_pid):
                os.kill(self.master_pid, signal.SIGKILL)

    def queue_count(self):
        n = 0
        for sub in self.QUEUE_SUBDIRS:
            for _root, _dirs, files in os.walk(os.path.join(self.queue_dir, sub)):
                n += len(files)
        return n

    def queue_len(self):
        """Files in Postfix's queue directories (what postqueue -p would
        list, without asking showq)."""
        return self.queue_count()

    def before_run(self):
        pass

    def after_run(self, run):
        """Postfix logs nowhere here (no syslog, no maillog_file), so the
        check is smtp-source's exit status (it exits non-zero on any reply
        but 250 to the end of data); then wait for the queue to drain."""
        if not self.alive():
            problem("Postfix master died during %s" % run["label"])
            return
        deadline = time.monotonic() + 120
        left = self.queue_count()
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = self.queue_count()
        run["server_queue_left"] = left
        if left:
            problem("%s: %d messages still in Postfix's queue after 120 s" % (run["label"], left))


# ---- the measurements -------------------------------------------------------


def fsync_limits(build, directory, seconds):
    tool = os.path.join(build, "tests", "fsyncbench")
    path = os.path.join(directory, "fsyncbench.dat")
    res = {}
    for key, rec, batch in (("single_5k", 5120, 1), ("batched_5k", 5120, 20),
                            ("batched_100k", 102400, 20)):
        note("durable-write limit: %s (%d B records, %d per fdatasync, %d s)"
             % (key, rec, batch, seconds))
        p = subprocess.run([tool, "-s", str(rec), "-b", str(batch), "-t", str(seconds), path],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if p.returncode != 0:
            raise RuntimeError("fsyncbench failed: %s" % p.stderr.decode().strip())
        res[key] = json.loads(p.stdout)
    return res


def ingest(servers, reps, seconds, timeout, profiles=PROFILES):
    """Every profile on every server, alternating; a short warm-up run per
    (server, profile) sizes the measured runs to about `seconds` each."""
    results = []
    for sessions, length in profiles:
        prof = {"sessions": sessions, "length": length, "runs": {}}
        results.append(prof)
        counts = {}
        for srv in servers:
            prof["runs"][srv.name] = []
            warm = max(sessions * 4, 200 if length <= 8192 else 50)
            label = "%s %d sessions x %d B warm-up" % (srv.name, sessions, length)
            srv.before_run()
            run = run_smtp_source(srv.port, sessions, length, warm, timeout)
            run["label"] = label
            srv.after_run(run)
            prof.setdefault("warmup", {})[srv.name] = run
            if run["exit"] != 0:
                problem("%s: smtp-source exit %s: %s" % (label, run["exit"], run["stderr"]))
                counts[srv.name] = warm
            else:
                counts[srv.name] = int(min(200000, max(sessions * 5, warm,
                                                       run["msg_per_s"] * seconds)))
        for rep in range(reps):
            order = servers if rep % 2 == 0 else list(reversed(servers))
            for srv in order:
                label = "%s %d sessions x %d B run %d" % (srv.name, sessions, length, rep + 1)
                srv.before_run()
                run = run_smtp_source(srv.port, sessions, length, counts[srv.name], timeout)
                run["label"] = label
                srv.after_run(run)
                prof["runs"][srv.name].append(run)
                if run["exit"] != 0:
                    problem("%s: smtp-source exit %s: %s" % (label, run["exit"], run["stderr"]))
                else:  # size the next run from this one's rate
                    counts[srv.name] = int(min(200000, max(sessions * 5,
                                                           run["msg_per_s"] * seconds)))
                note("%-40s %6d msgs %6.2f s  %8s msg/s  machine cpu %3.0f%%%s"
                     % (label, run["messages"], run["seconds"], fmt_rate(run["msg_per_s"]),
                        100 * run["cpu_busy"],
                        "  ternd %s us cpu, %s ctx switches /msg"
                        % (run.get("server_cpu_us_per_msg"), run.get("server_ctx_switches_per_msg"))
                        if "server_cpu_us_per_msg" in run else ""))
        for srv in servers:
            prof[srv.name + "_msg_per_s"] = median(r["msg_per_s"] for r in prof["runs"][srv.name])
    return results


def idle_rss(build, workdir, nsessions):
    """A fresh ternd; its RSS before and with nsessions idle connections
    (each greeted), then after they are closed."""
    tern = Tern(build, os.path.join(workdir, "rss"))
    os.makedirs(os.path.join(workdir, "rss"), exist_ok=True)
    socks = []
    res = {"sessions": nsessions}
    try:
        tern.start()
        time.sleep(1)
        res["pid"] = tern.pid
        res["baseline_kib"] = proc_status(tern.pid, "VmRSS")
        res["threads"] = proc_status(tern.pid, "Threads")
        t0 = time.monotonic()
        greeted = 0
        for i in range(nsessions):
            s = socket.create_connection(("127.0.0.1", tern.port), timeout=10)
            socks.append(s)
            f = b""
            while not f.endswith(b"\n"):
                chunk = s.recv(512)
                if not chunk:
                    break
                f += chunk
            if f.startswith(b"220"):
                greeted += 1
            elif i == greeted:  # first failure only
                problem("idle-RSS: connection %d got %r instead of a 220 greeting" % (i + 1, f[:200]))
        res["greeted"] = greeted
        res["connect_seconds"] = round(time.monotonic() - t0, 2)
        time.sleep(1)
        res["with_sessions_kib"] = proc_status(tern.pid, "VmRSS")
        res["hwm_kib"] = proc_status(tern.pid, "VmHWM")
        if res["baseline_kib"] is not None and res["with_sessions_kib"] is not None:
            res["per_session_kib"] = round(
                (res["with_sessions_kib"] - res["baseline_kib"]) / max(1, greeted), 2)
        if greeted != nsessions:
            problem("idle-RSS: only %d of %d connections were greeted" % (greeted, nsessions))
        if not tern.alive():
            problem("ternd died with %d sessions open" % len(socks))
    finally:
        for s in socks:
            s.close()
        if tern.alive():
            time.sleep(1)
            res["after_close_kib"] = proc_status(tern.pid, "VmRSS")
            odd = [l for l in tern.new_log()
                   if re.search(r"\b(warning|error|fatal|panic):", l)]
            if odd:
                res["server_log_problems"] = odd[:20]
                problem("ternd logged %d warning/error lines in the idle-RSS test; first: %s"
                        % (len(odd), odd[0]))
        tern.stop()
    return res


# ---- TLS: STARTTLS handshakes, messages over TLS, idle TLS sessions ----------

TLS_IDLE_TARGET_KIB = 64  # issue 7: memory per idle TLS session


def tls_cert(workdir):
    """A self-signed RSA-2048 certificate for both servers (readable by their users)."""
    d = os.path.join(workdir, "tls")
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=bench.local", "-keyout", key, "-out", cert],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for f in (cert, key):
        os.chmod(f, 0o644)
    return cert, key


def run_tlsload(build, port, conc, sessions, messages, length, timeout):
    argv = [os.path.join(build, "tests", "tlsload"), "-c", str(conc), "-s", str(sessions),
            "-m", str(messages), "-b", str(length), "127.0.0.1", str(port)]
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"exit": None, "error": "tlsload timed out after %d s" % timeout}
    lines = p.stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        res = json.loads(lines[-1])
    except (IndexError, ValueError):
        res = {"error": p.stderr.decode("utf-8", "replace").strip()[:300]}
    res["exit"] = p.returncode
    return res


def tls_idle(build, workdir, over, nsessions):
    """A fresh ternd; RSS with nsessions idle sessions that did STARTTLS."""
    tern = Tern(build, workdir, sub="tern-tls-idle", overrides=over)
    res = {"sessions": nsessions}
    proc = None
    try:
        tern.start()
        time.sleep(1)
        res["baseline_kib"] = proc_status(tern.pid, "VmRSS")
        proc = subprocess.Popen([os.path.join(build, "tests", "tlsload"), "-i", "-s",
                                 str(nsessions), "127.0.0.1", str(tern.port)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        line = proc.stdout.readline().decode().split()
        res["up"] = int(line[1]) if len(line) == 2 and line[0] == "ready" else 0
        time.sleep(1)
        res["with_sessions_kib"] = proc_status(tern.pid, "VmRSS")
        if res["up"] and res["baseline_kib"] is not None and res["with_sessions_kib"] is not None:
            res["per_session_kib"] = round((res["with_sessions_kib"] - res["baseline_kib"])
                                           / res["up"], 2)
        if res["up"] != nsessions:
            problem("TLS idle: only %d of %d sessions got through STARTTLS" % (res["up"], nsessions))
    except RuntimeError as e:
        problem("TLS idle: %s" % str(e).splitlines()[0])
    finally:
        if proc is not None:
            proc.stdin.close()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        tern.stop()
    return res


def tls_phase(build, workdir, reps, idle_sessions):
    """STARTTLS on both servers with the same certificate: handshakes/s
    (20 concurrent sessions that only do STARTTLS and QUIT), messages/s
    over TLS (20 sessions x 50 x 5 KiB), and Tern's memory per idle TLS
    session."""
    cert, key = tls_cert(workdir)
    over = {"smtpd_tls_security_level": "may", "smtpd_tls_cert_file": cert,
            "smtpd_tls_key_file": key}
    servers = [Tern(build, workdir, sub="tern-tls", overrides=over),
               Postfix(workdir, sub="postfix-tls", overrides=over)]
    res = {"handshakes": {}, "messages": {}, "ok": True}
    up = []
    for srv in servers:
        _cleanup.append(srv.stop)
        try:
            srv.start()
            up.append(srv)
        except RuntimeError as e:
            problem("TLS: %s does not start: %s" % (srv.name, str(e).splitlines()[0]))
            res["ok"] = False
    for rep in range(reps):
        for srv in (up if rep % 2 == 0 else list(reversed(up))):
            hs = run_tlsload(build, srv.port, 20, 400, 0, 5120, 300)
            ms = run_tlsload(build, srv.port, 20, 20, 50, 5120, 300)
            for kind, r, n in (("handshakes", hs, "handshakes"), ("messages", ms, "messages")):
                rate = r[n] / r["seconds"] if r.get("seconds") else None
                res[kind].setdefault(srv.name, []).append(rate)
                if r.get("exit") != 0:
                    problem("TLS %s on %s: %s" % (kind, srv.name,
                                                  r.get("first_error") or r.get("error")))
                    res["ok"] = False
            note("TLS %-8s run %d: %s handshakes/s, %s msg/s over TLS"
                 % (srv.name, rep + 1, fmt_rate(res["handshakes"][srv.name][-1]),
                    fmt_rate(res["messages"][srv.name][-1])))
    for srv in servers:
        srv.stop()
    for kind in ("handshakes", "messages"):
        for name, rates in list(res[kind].items()):
            res[kind][name + "_median"] = median([r for r in rates if r]) if any(rates) else None
    if idle_sessions > 0 and any(s.name == "tern" for s in up):
        res["idle"] = tls_idle(build, workdir, over, idle_sessions)
    return res


# ---- milters: receive-only with a null milter and with opendkim --------------

MILTER_PROFILE = (20, 5120)
MILTER_TARGET = 0.80  # ternd with a null milter keeps >= 80% of its milter-less rate
OPENDKIM = "/usr/sbin/opendkim"


class NullMilter:
    """tests/tools/nullmilter: accepts everything; -m nr asks the MTA for
    no replies to any event (SMFIP_NR_*), only EOM is answered. Counts the
    messages (EOMs) it saw."""

    def __init__(self, build, mode="nr"):
        self.argv = [os.path.join(build, "tests", "nullmilter"), "-m", mode]
        self.port = free_port()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.argv + [str(self.port)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        if self.proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("nullmilter did not start: %s"
                               % self.proc.stderr.read().decode("utf-8", "replace").strip())

    def stop(self):
        """Stops it; returns the number of messages it answered, or None."""
        if not self.proc or self.proc.poll() is not None:
            return None
        self.proc.terminate()
        try:
            out = self.proc.communicate(timeout=10)[0].decode()
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None
        m = re.search(r"messages=(\d+)", out)
        return int(m.group(1)) if m else None


class OpenDKIM:
    """opendkim signing mail from SENDER's domain with a fresh RSA-2048
    key (relaxed/simple), for every client on 127.0.0.1."""

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "opendkim")
        self.port = free_port()
        self.proc = None
        self.domain = SENDER.split("@", 1)[1]

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        subprocess.run(["opendkim-genkey", "-b", "2048", "-d", self.domain, "-s", "bench",
                        "-D", self.dir], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        conf = os.path.join(self.dir, "opendkim.conf")
        with open(conf, "w") as f:
            f.write("Syslog no\nMode s\nSocket inet:%d@127.0.0.1\nDomain %s\nSelector bench\n"
                    "KeyFile %s\nInternalHosts 127.0.0.1\nCanonicalization relaxed/simple\n"
                    "RequireSafeKeys false\nBackground false\n"
                    % (self.port, self.domain, os.path.join(self.dir, "bench.private")))
        self.proc = subprocess.Popen([OPENDKIM, "-f", "-x", conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 20
        while True:  # a milter has no greeting: wait until it accepts
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("opendkim did not start: %s" % self.proc.stderr.read()
                                       .decode("utf-8", "replace").strip())
                time.sleep(0.1)
        self.check_signs()

    def check_signs(self):
        """One message over the milter protocol: opendkim must add a
        DKIM-Signature, or the opendkim rows would measure nothing."""
        from milterclient import MilterClient
        c = MilterClient(self.port)
        c.connect(addr="127.0.0.1", **{"{client_addr}": "127.0.0.1", "j": "bench.local"})
        c.helo()
        mods, final = c.message(SENDER, [RECIPIENT],
                                [("From", "<%s>" % SENDER), ("To", "<%s>" % RECIPIENT),
                                 ("Subject", "bench")], b"bench\r\n", qid="BENCH1")
        c.close()
        if not any(b"DKIM-Signature" in m[1] for m in mods):
            raise RuntimeError("opendkim did not sign a test message (replies %r %r)"
                               % (mods, final))

    def cpu_seconds(self):
        return proc_cpu_seconds(self.proc.pid) if self.proc else None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def milter_phase(build, workdir, reps, seconds):
    """The receive-only target profile on ternd and Postfix, each bare,
    with the null milter and with opendkim signing; all six servers up for
    the whole phase, runs alternating."""
    res = {"profile": {"sessions": MILTER_PROFILE[0], "length": MILTER_PROFILE[1]},
           "ok": True}
    nm_tern, nm_pfx, dkim = NullMilter(build), NullMilter(build), OpenDKIM(workdir)
    for m in (nm_tern, nm_pfx, dkim):
        _cleanup.append(m.stop)
        m.start()
    ep = "inet:127.0.0.1:%d"
    servers = [Tern(build, workdir, sub="tern-m"),
               Tern(build, workdir, sub="tern-m-null", overrides={"smtpd_milters": ep % nm_tern.port}),
               Tern(build, workdir, sub="tern-m-dkim", overrides={"smtpd_milters": ep % dkim.port}),
               Postfix(workdir, sub="postfix-m"),
               Postfix(workdir, sub="postfix-m-null", overrides={"smtpd_milters": ep % nm_pfx.port}),
               Postfix(workdir, sub="postfix-m-dkim", overrides={"smtpd_milters": ep % dkim.port})]
    for srv, suffix in zip(servers, ("", "+null", "+opendkim") * 2):
        srv.name = srv.name + suffix
        _cleanup.append(srv.stop)
        srv.start()
    cpu0 = dkim.cpu_seconds()
    prof = ingest(servers, reps, seconds, timeout=300, profiles=[MILTER_PROFILE])[0]
    dkim_cpu = dkim.cpu_seconds() - cpu0 if cpu0 is not None else None
    for srv in servers:
        srv.stop()
    # every message each server accepted went through its null milter
    for nm, prefix in ((nm_tern, "tern"), (nm_pfx, "postfix")):
        seen = nm.stop()
        runs = [prof["warmup"][prefix + "+null"]] + prof["runs"][prefix + "+null"]
        sent = sum(r["messages"] for r in runs if r["exit"] == 0)
        res[prefix + "_null_milter_messages"] = seen
        if seen is None or seen < sent:
            problem("milter: the null milter behind %s answered %s end-of-message events for %d "
                    "accepted messages" % (prefix, seen, sent))
            res["ok"] = False
    dkim.stop()
    dkim_msgs = sum(r["messages"] for name in ("tern+opendkim", "postfix+opendkim")
                    for r in [prof["warmup"][name]] + prof["runs"][name] if r["exit"] == 0)
    if any(r["exit"] != 0 for runs in prof["runs"].values() for r in runs):
        res["ok"] = False
    rate = {srv.name: prof.get(srv.name + "_msg_per_s") for srv in servers}
    res["msg_per_s"] = rate
    res["runs"] = prof["runs"]

    def ratio(a, b):
        return round(rate[a] / rate[b], 3) if rate.get(a) and rate.get(b) else None

    def cost(a, b):  # wall microseconds a milter adds per message, at this concurrency
        return round(1e6 / rate[a] - 1e6 / rate[b]) if rate.get(a) and rate.get(b) else None
    res["kept"] = {"tern+null": ratio("tern+null", "tern"),
                   "tern+opendkim": ratio("tern+opendkim", "tern"),
                   "postfix+null": ratio("postfix+null", "postfix"),
                   "postfix+opendkim": ratio("postfix+opendkim", "postfix")}
    res["tern_vs_postfix"] = {"bare": ratio("tern", "postfix"), "null": ratio("tern+null", "postfix+null"),
                              "opendkim": ratio("tern+opendkim", "postfix+opendkim")}
    res["cost_us_per_msg"] = {"tern+null": cost("tern+null", "tern"),
                              "tern+opendkim": cost("tern+opendkim", "tern"),
                              "postfix+null": cost("postfix+null", "postfix"),
                              "postfix+opendkim": cost("postfix+opendkim", "postfix")}
    res["opendkim_cpu_us_per_msg"] = round(1e6 * dkim_cpu / dkim_msgs) if dkim_cpu and dkim_msgs else None
    kept = res["kept"]["tern+null"]
    res["target"] = {"kept_required": MILTER_TARGET, "kept": kept,
                     "met": bool(kept and kept >= MILTER_TARGET)}
    return res


# ---- relay: smtp-source -> server -> sink ------------------------------------


class Counter:
    """Reads a child's running counters from its stdout in a thread:
    smtp-source -c prints "N\r" per accepted message, smtp-sink -c prints
    "sess=N quit=N mesg=N\r", the tempfail sink "mesg=N rcpt=N ...\n".
    Keeps the latest values and, for `key`, when each value was first seen
    (time.monotonic())."""

    def __init__(self, stream, key):
        self.fd = stream.fileno()
        self.stream = stream
        self.key = key  # None: a bare number
        self.values = {}
        self.history = [(time.monotonic(), 0)]  # (time, value of key) on change
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        buf = b""
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            now = time.monotonic()
            buf += chunk
            parts = re.split(rb"[\r\n]", buf)
            buf = parts.pop()
            for part in parts:
                part = part.strip()
                if not part:
                    continue
                try:
                    if self.key is None:
                        vals = {None: int(part)}
                    else:
                        vals = {k.decode(): int(v) for k, v in
                                (f.split(b"=", 1) for f in part.split() if b"=" in f)}
                except ValueError:
                    continue
                with self.lock:
                    self.values.update(vals)
                    v = vals.get(self.key)
                    if v is not None and v != self.history[-1][1]:
                        self.history.append((now, v))

    def get(self, key=False):
        with self.lock:
            return self.values.get(self.key if key is False else key, 0)

    def reached(self, n):
        """When the key's value first reached n, or None."""
        with self.lock:
            for t, v in self.history:
                if v >= n:
                    return t
        return None

    def join(self, timeout=5):
        self.thread.join(timeout)


class SmtpSink:
    """Postfix's smtp-sink, accepting everything, with -c counters."""
    kind = "smtp-sink"
    key = "mesg"  # messages received (each bench message has one recipient)

    def __init__(self):
        self.port = free_port()
        self.proc = None

    def argv(self):
        return [SMTP_SINK, "-c", "-u", "nobody", "-m", "1000", "127.0.0.1:%d" % self.port, "1024"]

    def start(self):
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        self.counter = Counter(self.proc.stdout, self.key)
        if not wait_port(self.port, 10, self.proc):
            raise RuntimeError("%s did not start on 127.0.0.1:%d (exit %s)"
                               % (self.kind, self.port, self.proc.poll()))
        time.sleep(0.2)  # the probe connection's counters

    def get(self, key=False):
        return self.counter.get(key)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.counter.join()
        self.proc.stdout.close()
        self.proc = None


class TempfailSink(SmtpSink):
    """tempfail_sink_main() below in a child process: answers 450 to a
    deterministic share of RCPT addresses the first time it sees them."""
    kind = "tempfail sink"
    key = "rcpt"  # recipients accepted at the end of DATA

    def __init__(self, percent, hold_s, early_s):
        super().__init__()
        self.percent = percent
        self.hold_s = hold_s
        self.early_s = early_s

    def argv(self):
        return [sys.executable, os.path.abspath(__file__), "--tempfail-sink",
                str(self.port), str(self.percent), str(self.hold_s), str(self.early_s)]


def tempfail_sink_main(port, percent, hold_s, early_s):
    """A small SMTP sink (asyncio, one process) for the tempfail rows.
    RCPT TO:<addr> with crc32(addr) % 100 < percent gets "450 4.2.1" on its
    first attempt and on any attempt within hold_s seconds of that (like
    greylisting: a client that retries at once, without backing off, is
    tempfailed again), 250 later; every other RCPT gets 250. Accepted mail
    is counted and thrown away. Counters go to stdout as
    "mesg=N rcpt=N tempfail=N rejects=N dup=N retried=N retry_ms=N early=N"
    lines: messages and recipients received, recipients tempfailed, 450
    replies in all, recipients received more than once (duplicate
    deliveries), tempfailed recipients received later, the sum of their
    delays from the first 450 to the end of the DATA that delivered them
    (ms), and how many of those came sooner than early_s seconds after the
    first 450."""
    import asyncio
    import zlib

    st = {"mesg": 0, "rcpt": 0, "tempfail": 0, "rejects": 0, "dup": 0, "retried": 0,
          "retry_ms": 0, "early": 0}
    failed, delivered = {}, set()  # failed: address -> time of its 450
    dirty = [False]

    def show():
        if dirty[0]:
            dirty[0] = False
            sys.stdout.write(" ".join("%s=%d" % kv for kv in st.items()) + "\n")
            sys.stdout.flush()

    class Session(asyncio.Protocol):
        def connection_made(self, tr):
            self.tr = tr
            self.buf = bytearray()
            self.data = False
            self.scan = 0
            self.rcpts = []
            tr.write(b"220 tempfail-sink ESMTP\r\n")

        def data_received(self, chunk):
            self.buf += chunk
            out = []
            while True:
                if self.data:
                    if self.buf.startswith(b".\r\n"):
                        end = 3
                    else:
                        i = self.buf.find(b"\r\n.\r\n", self.scan)
                        if i < 0:
                            self.scan = max(0, len(self.buf) - 4)
                            break
                        end = i + 5
                    del self.buf[:end]
                    self.data, self.scan = False, 0
                    st["mesg"] += 1
                    now = time.monotonic()
                    for a in self.rcpts:
                        if a in delivered:
                            st["dup"] += 1
                        else:
                            delivered.add(a)
                            t = failed.get(a)
                            if t is not None:
                                st["retried"] += 1
                                st["retry_ms"] += int(1000 * (now - t))
                                st["early"] += now - t < early_s
                        st["rcpt"] += 1
                    self.rcpts = []
                    dirty[0] = True
                    out.append(b"250 2.0.0 Ok: queued\r\n")
                    continue
                i = self.buf.find(b"\n")
                if i < 0:
                    break
                line = bytes(self.buf[:i]).rstrip(b"\r")
                del self.buf[:i + 1]
                verb = line[:4].upper()
                if verb == b"EHLO":
                    out.append(b"250-tempfail-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                               b"250 ENHANCEDSTATUSCODES\r\n")
                elif verb == b"HELO":
                    out.append(b"250 tempfail-sink\r\n")
                elif verb == b"MAIL":
                    self.rcpts = []
                    out.append(b"250 2.1.0 Ok\r\n")
                elif verb == b"RCPT":
                    a = line.partition(b"<")[2].partition(b">")[0].lower()
                    t = failed.get(a)
                    if (t is None and zlib.crc32(a) % 100 < percent) \
                            or (t is not None and time.monotonic() - t < hold_s):
                        if t is None:
                            failed[a] = time.monotonic()
                            st["tempfail"] += 1
                        st["rejects"] += 1
                        dirty[0] = True
                        out.append(b"450 4.2.1 <%s>: Recipient address rejected: try again later\r\n"
                                   % a)
                    else:
                        self.rcpts.append(a)
                        out.append(b"250 2.1.5 Ok\r\n")
                elif verb == b"DATA":
                    if self.rcpts:
                        self.data, self.scan = True, 0
                        out.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    else:
                        out.append(b"554 5.5.1 Error: no valid recipients\r\n")
                elif verb == b"RSET":
                    self.rcpts = []
                    out.append(b"250 2.0.0 Ok\r\n")
                elif verb == b"NOOP":
                    out.append(b"250 2.0.0 Ok\r\n")
                elif verb == b"QUIT":
                    out.append(b"221 2.0.0 Bye\r\n")
                    self.tr.write(b"".join(out))
                    self.tr.close()
                    show()
                    return
                else:
                    out.append(b"502 5.5.2 Error: command not recognized\r\n")
            if out:
                self.tr.write(b"".join(out))
            show()

    async def serve():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Session, "127.0.0.1", port, backlog=1024)
        if os.geteuid() == 0:  # like smtp-sink -u nobody
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
        async with server:
            await server.serve_forever()

    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    return 0


TERN_LOG_QID = re.compile(r": ([0-9A-F]+): ")
TERN_LOG_TO = re.compile(r": to=<([^>]*)>")


def tern_log_summary(lines):
    """What ternd logged for a relay run: queue IDs that entered the active
    queue, recipients logged status=sent (with duplicates), deferrals,
    bounces, removed queue IDs, and warnings/errors."""
    res = {"active": set(), "sent": [], "deferred": 0, "bounced": [], "removed": set(), "odd": []}
    for line in lines:
        m = TERN_LOG_QID.search(line)
        if line.endswith("(queue active)") and m:
            res["active"].add(m.group(1))
        elif "status=sent" in line:
            t = TERN_LOG_TO.search(line)
            res["sent"].append(t.group(1) if t else line)
        elif "status=deferred" in line:
            res["deferred"] += 1
        elif "status=bounced" in line or "status=expired" in line:
            res["bounced"].append(line)
        elif line.endswith(": removed") and m:
            res["removed"].add(m.group(1))
        elif re.search(r"\b(warning|error|fatal|panic):", line) or "reject:" in line:
            res["odd"].append(line)
    return res


def backlog_slope(samples, t_from, t_to):
    """Least-squares slope (messages/s) of accepted - delivered over time,
    for the samples in [t_from, t_to]; None with too few samples."""
    pts = [(t, acc - dl) for t, acc, dl, _q in samples if t_from <= t <= t_to]
    if len(pts) < 5 or pts[-1][0] - pts[0][0] < 0.5:
        return None
    return statistics.linear_regression([p[0] for p in pts], [p[1] for p in pts]).slope


def relay_run(srv, sink, sessions, length, count, label, rcpt_tag="", expect_deferred=False,
              timeout=300, drain_timeout=120):
    """One end-to-end run: smtp-source -c into srv, which relays to sink.
    Samples smtp-source's and the sink's counters every 0.1 s and the
    server's queue length every QUEUE_SAMPLE_S; the run ends when the sink
    has received every message smtp-source got a 250 for. Then checks the
    server side: queue empty, (Tern) every message logged sent exactly once
    and removed, nothing bounced; and the sink: nothing received twice."""
    base = sink.get()
    base_tf = sink.get("tempfail")
    base_rej = sink.get("rejects")
    base_dup = sink.get("dup")
    base_retry = (sink.get("retried"), sink.get("retry_ms"), sink.get("early"))
    if srv.name == "tern":
        srv.new_log()
        cpu0 = proc_cpu_seconds(srv.pid)
    to = "%s%s" % (rcpt_tag, RECIPIENT)
    argv = [SMTP_SOURCE, "-c", "-s", str(sessions), "-l", str(length), "-m", str(count),
            "-d", "-N", "-f", SENDER, "-t", to, "127.0.0.1:%d" % srv.port]
    errf = tempfile.TemporaryFile()
    c0 = system_cpu()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errf)
    src = Counter(p.stdout, None)
    samples = []  # (t, accepted by server, received by sink, queue length or None)
    t_submit = None
    next_q = t0
    rc = None
    while True:
        now = time.monotonic()
        if t_submit is None:
            rc = p.poll()
            if rc is not None:
                src.join()
                # The last 250 seen; the exit itself can come a little later.
                t_submit = src.history[-1][0] if rc == 0 and src.history[-1][1] else now
            elif now - t0 > timeout:
                p.kill()
                p.wait()
                src.join()
                rc, t_submit = "timeout", now
        q = None
        if now >= next_q:
            q = srv.queue_len()
            next_q = time.monotonic() + QUEUE_SAMPLE_S
        got = sink.get() - base
        samples.append((round(now - t0, 3), src.get(), got, q))
        if t_submit is not None and (got >= src.get() or now - t_submit > drain_timeout
                                     or not srv.alive() or not sink.alive()):
            break
        time.sleep(0.1)
    p.stdout.close()
    errf.seek(0)
    err = errf.read().decode("utf-8", "replace").strip()[-2000:]
    errf.close()
    accepted = src.get()
    t_end = sink.counter.reached(base + accepted) if accepted else None
    c1 = system_cpu()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = {
        "label": label, "argv": argv, "messages": count, "accepted": accepted, "exit": rc,
        "stderr": err, "submit_seconds": round(t_submit - t0, 4),
        "submit_msg_per_s": round(accepted / (t_submit - t0), 1) if accepted else None,
        "cpu_busy": round((c1[0] - c0[0]) / max(1, c1[1] - c0[1]), 3),
        "client_cpu_s": round(ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime, 2),
    }
    if t_end is not None:
        run["seconds"] = round(t_end - t0, 4)
        run["msg_per_s"] = round(accepted / (t_end - t0), 1) if rc == 0 else None
        run["drain_after_submit_s"] = round(max(0.0, t_end - t_submit), 3)
    else:
        run["seconds"] = run["msg_per_s"] = run["drain_after_submit_s"] = None
    if rc != 0:
        problem("%s: smtp-source exit %s: %s" % (label, rc, err))

    # Queue and backlog while mail was being submitted and until it drained.
    qs = [s for s in samples if s[3] is not None]
    run["queue_samples"] = [[s[0], s[3]] for s in qs]
    run["max_queue"] = max((s[3] for s in qs), default=None)
    run["queue_at_submit_end"] = next((s[3] for s in reversed(qs) if s[0] <= t_submit - t0), None)
    run["max_backlog"] = max((acc - dl for _t, acc, dl, _q in samples), default=None)
    sub = t_submit - t0
    slope = backlog_slope(samples, 0.3 * sub, sub)
    run["backlog_slope_msg_per_s"] = round(slope, 1) if slope is not None else None
    run["backlog_samples"] = [[s[0], s[1] - s[2]] for s in samples[::5]]

    # The server side.
    deadline = time.monotonic() + 30
    left = srv.queue_len()
    while left and time.monotonic() < deadline and srv.alive():
        time.sleep(0.2)
        left = srv.queue_len()
    run["queue_left"] = left
    if srv.name == "tern":
        cpu1 = proc_cpu_seconds(srv.pid)
        if cpu0 is not None and cpu1 is not None and accepted:
            run["server_cpu_us_per_msg"] = round(1e6 * (cpu1 - cpu0) / accepted)
        lines = []
        while True:  # until every queued message's removal is logged
            lines += srv.new_log()
            lg = tern_log_summary(lines)
            if lg["removed"] >= lg["active"] or time.monotonic() > deadline or not srv.alive():
                break
            time.sleep(0.2)
        sent = len(lg["sent"])
        dups = sent - len(set(lg["sent"]))
        run.update({"server_queued": len(lg["active"]), "server_delivered": sent,
                    "server_duplicate_deliveries": dups, "server_deferred": lg["deferred"],
                    "server_bounced": len(lg["bounced"]), "server_removed": len(lg["removed"])})
        if len(lg["active"]) != accepted:
            problem("%s: smtp-source saw %d x 250 but ternd logged %d messages queued"
                    % (label, accepted, len(lg["active"])))
        if sent != accepted or dups:
            problem("%s: ternd logged %d status=sent for %d accepted messages (%d duplicates)"
                    % (label, sent, accepted, dups))
        if lg["removed"] != lg["active"]:
            problem("%s: ternd logged %d of %d queued messages removed within 30 s"
                    % (label, len(lg["removed"] & lg["active"]), len(lg["active"])))
        if lg["bounced"]:
            problem("%s: ternd bounced %d messages; first: %s"
                    % (label, len(lg["bounced"]), lg["bounced"][0]))
        if lg["deferred"] and not expect_deferred:
            problem("%s: ternd deferred %d deliveries to an accept-all sink" % (label, lg["deferred"]))
        if lg["odd"]:
            run["server_log_problems"] = lg["odd"][:20]
            problem("%s: ternd logged %d warning/error lines; first: %s"
                    % (label, len(lg["odd"]), lg["odd"][0]))
    if not srv.alive():
        problem("%s died during %s" % (srv.name, label))
    if left is None:
        problem("%s: cannot read %s's queue" % (label, srv.name))
    elif left:
        problem("%s: %d messages still in %s's queue 30 s after the run" % (label, left, srv.name))

    # The sink: everything once.
    time.sleep(0.1)
    got = sink.get() - base
    run["sink_received"] = got
    run["sink_tempfailed"] = sink.get("tempfail") - base_tf
    run["sink_450_replies"] = sink.get("rejects") - base_rej
    if sink.key == "rcpt":
        run["sink_duplicates"] = sink.get("dup") - base_dup
        retried = sink.get("retried") - base_retry[0]
        run["sink_retried"] = retried
        run["sink_retry_delay_mean_s"] = (round((sink.get("retry_ms") - base_retry[1]) / 1000
                                                / retried, 3) if retried else None)
        run["sink_retried_early"] = sink.get("early") - base_retry[2]
    if got < accepted:
        problem("%s: LOST MAIL: the sink received %d of the %d messages %s accepted "
                "(within %d s of the end of submission)" % (label, got, accepted, srv.name,
                                                             drain_timeout))
    elif got > accepted or run.get("sink_duplicates"):
        problem("%s: DUPLICATES: the sink received %d messages (%s duplicate recipients) "
                "for %d accepted" % (label, got, run.get("sink_duplicates", got - accepted),
                                     accepted))
    run["ok"] = bool(rc == 0 and got == accepted and not run.get("sink_duplicates")
                     and left == 0 and srv.alive()
                     and (srv.name != "tern" or (run["server_delivered"] == accepted
                                                 and not run["server_duplicate_deliveries"]
                                                 and not run["server_bounced"])))
    note("%-34s %6d msgs  submit %5.2f s  end-to-end %6s s %8s msg/s  max queue %s  drain %s s"
         "  cpu %3.0f%%"
         % (label, accepted, run["submit_seconds"], run["seconds"], fmt_rate(run["msg_per_s"]),
            run["max_queue"], run["drain_after_submit_s"], 100 * run["cpu_busy"]))
    return run


def relay_size(run, seconds, sessions, floor):
    if run.get("msg_per_s"):
        return int(min(200000, max(sessions * 5, floor, run["msg_per_s"] * seconds)))
    return floor


def relay(build, workdir, reps, seconds):
    """Relay end to end, Tern vs Postfix, each relaying to its own smtp-sink."""
    results = {"profiles": [], "ok": True}
    tsink, psink = SmtpSink(), SmtpSink()
    tern = Tern(build, workdir, "tern-relay", {
        "default_transport": "smtp", "relay_transport": "smtp",
        "relayhost": "[127.0.0.1]:%d" % tsink.port})
    postfix = Postfix(workdir, "postfix-relay", {
        "default_transport": "smtp", "relay_transport": "smtp",
        "relayhost": "[127.0.0.1]:%d" % psink.port})
    results["tern_settings"] = dict(tern.overrides)
    results["postfix_settings"] = dict(postfix.overrides)
    for x in (tsink, psink, tern, postfix):
        _cleanup.append(x.stop)
    try:
        tsink.start()
        psink.start()
        note("relay: ternd on :%d -> smtp-sink :%d, Postfix on :%d -> smtp-sink :%d"
             % (tern.port, tsink.port, postfix.port, psink.port))
        tern.start()
        postfix.start()
        servers = [tern, postfix]
        sinks = {"tern": tsink, "postfix": psink}
        for sessions, length in RELAY_PROFILES:
            prof = {"sessions": sessions, "length": length, "runs": {}, "warmup": {}}
            results["profiles"].append(prof)
            counts = {}
            for srv in servers:
                warm = max(sessions * 4, 200)
                run = relay_run(srv, sinks[srv.name], sessions, length, warm,
                                "%s relay %d sessions warm-up" % (srv.name, sessions))
                prof["warmup"][srv.name] = run
                results["ok"] &= run["ok"]
                counts[srv.name] = relay_size(run, seconds, sessions, warm)
                prof["runs"][srv.name] = []
            for rep in range(reps):
                for srv in (servers if rep % 2 == 0 else list(reversed(servers))):
                    run = relay_run(srv, sinks[srv.name], sessions, length, counts[srv.name],
                                    "%s relay %d sessions run %d" % (srv.name, sessions, rep + 1))
                    prof["runs"][srv.name].append(run)
                    results["ok"] &= run["ok"]
                    counts[srv.name] = relay_size(run, seconds, sessions, counts[srv.name])
            for name in ("tern", "postfix"):
                runs = prof["runs"][name]
                prof[name + "_msg_per_s"] = median(r["msg_per_s"] for r in runs)
                prof[name + "_submit_msg_per_s"] = median(r["submit_msg_per_s"] for r in runs)
                prof[name + "_max_queue"] = max((r["max_queue"] for r in runs
                                                 if r["max_queue"] is not None), default=None)
                prof[name + "_drain_s"] = median(r["drain_after_submit_s"] for r in runs)
                prof[name + "_backlog_slope"] = median(r["backlog_slope_msg_per_s"] for r in runs)
                # Growth: the backlog rises by more than 5% of the ingest
                # rate in the second part of the submission, in most runs.
                grows = [r["backlog_slope_msg_per_s"] > 0.05 * r["submit_msg_per_s"]
                         for r in runs if r["backlog_slope_msg_per_s"] is not None
                         and r["submit_msg_per_s"]]
                prof[name + "_queue_grows"] = (sum(grows) * 2 > len(grows)) if grows else None
            t, pf = prof["tern_msg_per_s"], prof["postfix_msg_per_s"]
            prof["ratio"] = round(t / pf, 2) if t and pf else None
        results["tern_after"] = {"rss_kib": proc_status(tern.pid, "VmRSS"),
                                 "hwm_kib": proc_status(tern.pid, "VmHWM"),
                                 "threads": proc_status(tern.pid, "Threads")}
    finally:
        postfix.stop()
        tern.stop()
        tsink.stop()
        psink.stop()
    return results


def tempfail(build, workdir, reps, seconds):
    """Tern relaying to a sink that tempfails TEMPFAIL_PERCENT of the RCPTs
    once: queue growth and recovery time."""
    sessions, length = TEMPFAIL_PROFILE
    sink = TempfailSink(TEMPFAIL_PERCENT, TEMPFAIL_HOLD_S, TEMPFAIL_EARLY_S)
    settings = {"default_transport": "smtp", "relay_transport": "smtp",
                "relayhost": "[127.0.0.1]:%d" % sink.port}
    settings.update(TEMPFAIL_SETTINGS)
    tern = Tern(build, workdir, "tern-tempfail", settings)
    res = {"sessions": sessions, "length": length, "percent": TEMPFAIL_PERCENT,
           "tern_settings": settings, "runs": [], "ok": True}
    _cleanup.append(sink.stop)
    _cleanup.append(tern.stop)
    try:
        sink.start()
        tern.start()
        note("tempfail: ternd on :%d -> tempfail sink :%d (%d%% of RCPTs 450 once; %s)"
             % (tern.port, sink.port, TEMPFAIL_PERCENT,
                ", ".join("%s=%s" % kv for kv in TEMPFAIL_SETTINGS.items())))
        warm = 400
        run = relay_run(tern, sink, sessions, length, warm, "tern tempfail warm-up",
                        rcpt_tag="w", expect_deferred=True, drain_timeout=60)
        res["warmup"] = run
        res["ok"] &= run["ok"]
        # Size from the submission rate: the recovery comes on top.
        count = int(min(50000, max(warm, (run["submit_msg_per_s"] or 0) * seconds)))
        for rep in range(reps):
            run = relay_run(tern, sink, sessions, length, count, "tern tempfail run %d" % (rep + 1),
                            rcpt_tag="r%d" % (rep + 1), expect_deferred=True, drain_timeout=60)
            run["recovery_s"] = run["drain_after_submit_s"]
            res["runs"].append(run)
            res["ok"] &= run["ok"]
            if run["server_deferred"] != run["sink_450_replies"]:
                problem("%s: the sink answered 450 to %d RCPTs (%d recipients) but ternd logged "
                        "%d status=deferred lines" % (run["label"], run["sink_450_replies"],
                                                      run["sink_tempfailed"], run["server_deferred"]))
            if run["sink_retried"] != run["sink_tempfailed"]:
                problem("%s: %d recipients tempfailed, %d of them delivered later"
                        % (run["label"], run["sink_tempfailed"], run["sink_retried"]))
            if run["sink_retried_early"]:
                problem("%s: %d of %d tempfailed recipients were delivered sooner than %g s "
                        "after their 450 (minimal_backoff_time = %s)"
                        % (run["label"], run["sink_retried_early"], run["sink_retried"],
                           TEMPFAIL_EARLY_S, TEMPFAIL_SETTINGS["minimal_backoff_time"]))
        runs = res["runs"]
        res["submit_msg_per_s"] = median(r["submit_msg_per_s"] for r in runs)
        res["msg_per_s"] = median(r["msg_per_s"] for r in runs)
        res["tempfailed_fraction"] = median(r["sink_tempfailed"] / r["accepted"]
                                            for r in runs if r["accepted"])
        res["max_queue"] = max((r["max_queue"] for r in runs if r["max_queue"] is not None),
                               default=None)
        res["queue_at_submit_end"] = median(r["queue_at_submit_end"] for r in runs)
        res["recovery_s"] = median(r["recovery_s"] for r in runs)
        res["retry_delay_mean_s"] = median(r["sink_retry_delay_mean_s"] for r in runs)
        res["recovery_s_max"] = max((r["recovery_s"] for r in runs if r["recovery_s"] is not None),
                                    default=None)
    finally:
        tern.stop()
        sink.stop()
    return res


# ---- output ------------------------------------------------------------------


def fmt_num(v, fmt="%.0f"):
    return "-" if v is None else fmt % v


def table(report):
    out = []
    la = report["machine"].get("loadavg_at_start") or []
    out.append("Tern bench  %s  %d CPUs  %s (%s)  Postfix %s"
               % (report["machine"]["kernel"], report["machine"]["cpus"],
                  report["machine"]["fs_type"], report["machine"]["fs_device"],
                  report["postfix_version"]))
    out.append("Before the start: load average %s, CPUs %.0f%% busy (other work makes the numbers noisier)"
               % (" ".join("%.2f" % x for x in la) or "?",
                  100 * report["machine"]["cpu_busy_before_start"]))
    out.append("")
    lim = report.get("durable_write_limit")
    if lim:
        out.append("Durable-write limit (append + fdatasync, same filesystem as the queues)")
        out.append("  %-34s %10s %10s %9s" % ("", "syncs/s", "records/s", "MiB/s"))
        for key, label in (("single_5k", "5 KiB, 1 record per fdatasync"),
                           ("batched_5k", "5 KiB, 20 records per fdatasync"),
                           ("batched_100k", "100 KiB, 20 records per fdatasync")):
            r = lim[key]
            out.append("  %-34s %10.0f %10.0f %9.1f"
                       % (label, r["syncs_per_s"], r["records_per_s"], r["MiB_per_s"]))
        out.append("")
    if report.get("ingest"):
        out.append("Receive-only durable ingest, smtp-source -d -N, messages/s (median of %d)"
                   % report["reps"])
        out.append("  %-8s %-8s %9s %9s %11s %16s"
                   % ("sessions", "size", "Tern", "Postfix", "Tern/Pfx", "Tern/batched lim"))
        for p in report["ingest"]:
            size = "5 KiB" if p["length"] == 5120 else "100 KiB"
            mark = "  <- target >= %.0fx" % TARGET_RATIO if (p["sessions"], p["length"]) == TARGET_PROFILE else ""
            out.append("  %-8d %-8s %9s %9s %11s %16s%s"
                       % (p["sessions"], size, fmt_rate(p.get("tern_msg_per_s")),
                          fmt_rate(p.get("postfix_msg_per_s")), fmt_ratio(p.get("ratio")),
                          fmt_pct(p.get("fraction_of_batched_limit")), mark))
        out.append("  (Tern/batched lim: Tern's rate / records/s of the batched row for that size)")
        out.append("")
    rel = report.get("relay")
    if rel:
        out.append("Relay end to end, smtp-source -d -N -> server -> smtp-sink, 5 KiB, messages/s"
                   " (median of %d)" % report["reps"])
        out.append("  %-8s %9s %9s %9s %13s %13s %15s"
                   % ("sessions", "Tern", "Postfix", "Tern/Pfx", "max queue", "drain s",
                      "backlog msg/s"))
        out.append("  %-8s %9s %9s %9s %13s %13s %15s"
                   % ("", "", "", "", "Tern / Pfx", "Tern / Pfx", "Tern / Pfx"))
        for p in rel["profiles"]:
            out.append("  %-8d %9s %9s %9s %13s %13s %15s  <- target >= %.0fx"
                       % (p["sessions"], fmt_rate(p.get("tern_msg_per_s")),
                          fmt_rate(p.get("postfix_msg_per_s")), fmt_ratio(p.get("ratio")),
                          "%s / %s" % (fmt_num(p.get("tern_max_queue")),
                                       fmt_num(p.get("postfix_max_queue"))),
                          "%s / %s" % (fmt_num(p.get("tern_drain_s"), "%.2f"),
                                       fmt_num(p.get("postfix_drain_s"), "%.2f")),
                          "%s / %s" % (fmt_num(p.get("tern_backlog_slope"), "%+.0f"),
                                       fmt_num(p.get("postfix_backlog_slope"), "%+.0f")),
                          RELAY_TARGET_RATIO))
        out.append("  (messages/s: from smtp-source's start until the sink has the last message;"
                   " max queue:")
        out.append("  largest of the queue samples every %.1f s over the measured runs; drain:"
                   " sink's last message" % QUEUE_SAMPLE_S)
        out.append("  after smtp-source's last 250; backlog: growth of accepted - delivered"
                   " late in the submission)")
        out.append("  submission alone: Tern %s msg/s, Postfix %s msg/s at %d sessions"
                   % (fmt_rate(rel["profiles"][0].get("tern_submit_msg_per_s")),
                      fmt_rate(rel["profiles"][0].get("postfix_submit_msg_per_s")),
                      rel["profiles"][0]["sessions"]))
        out.append("")
    tf = report.get("tempfail")
    if tf:
        out.append("Relay with %d%% of recipients tempfailed (450) on the first attempt (Tern, %d sessions"
                   " x 5 KiB, median of %d)" % (tf["percent"], tf["sessions"], len(tf["runs"])))
        out.append("  settings: %s" % ", ".join("%s = %s" % (k, tf["tern_settings"][k])
                                                  for k in TEMPFAIL_SETTINGS))
        out.append("  %8s %8s %6s %6s %8s %8s %6s %9s %7s %10s %7s"
                   % ("messages", "submit/s", "tfail", "450s", "deferred", "retry s", "early",
                      "max queue", "at end", "recovery s", "e2e/s"))
        for r in tf["runs"]:
            out.append("  %8d %8s %6d %6d %8s %8s %6s %9s %7s %10s %7s"
                       % (r["accepted"], fmt_rate(r["submit_msg_per_s"]), r["sink_tempfailed"],
                          r["sink_450_replies"], fmt_num(r.get("server_deferred"), "%d"),
                          fmt_num(r.get("sink_retry_delay_mean_s"), "%.2f"),
                          fmt_num(r.get("sink_retried_early"), "%d"), fmt_num(r["max_queue"]),
                          fmt_num(r["queue_at_submit_end"]), fmt_num(r["recovery_s"], "%.2f"),
                          fmt_rate(r["msg_per_s"])))
        out.append("  median: recovery %s s (max %s s), max queue %s, retry delay %s s; every"
                   " message delivered once: %s"
                   % (fmt_num(tf.get("recovery_s"), "%.2f"), fmt_num(tf.get("recovery_s_max"), "%.2f"),
                      fmt_num(tf.get("max_queue")), fmt_num(tf.get("retry_delay_mean_s"), "%.2f"),
                      "yes" if tf["ok"] else "NO"))
        out.append("  (tfail: recipients the sink tempfailed; 450s: its 450 replies, including"
                   " those to retries within")
        out.append("  %g s; deferred: ternd's status=deferred lines; retry s: mean time from the"
                   " first 450 to the" % TEMPFAIL_HOLD_S)
        out.append("  delivery of that recipient; early: delivered < %g s after its first 450;"
                   " at end: queue" % TEMPFAIL_EARLY_S)
        out.append("  at the end of submission; recovery: from smtp-source's last 250 until the"
                   " sink has every recipient)")
        out.append("")
    r = report.get("idle_rss") or {}
    if r:
        out.append("ternd RSS with %d idle sessions (greeted: %s)" % (r["sessions"], r.get("greeted")))
        out.append("  baseline %s KiB, with sessions %s KiB, per session %s KiB, after close %s KiB"
                   % (r.get("baseline_kib"), r.get("with_sessions_kib"),
                      r.get("per_session_kib"), r.get("after_close_kib")))
        out.append("")
    a = report.get("tern_after_ingest")
    if a:
        out.append("ternd after the ingest runs: RSS %s KiB, peak (VmHWM) %s KiB, %s threads"
                   % (a.get("rss_kib"), a.get("hwm_kib"), a.get("threads")))
    a = (rel or {}).get("tern_after")
    if a:
        out.append("ternd after the relay runs: RSS %s KiB, peak (VmHWM) %s KiB, %s threads"
                   % (a.get("rss_kib"), a.get("hwm_kib"), a.get("threads")))
    t = report.get("target")
    if t:
        out.append("Target (20 sessions, 5 KiB, Tern >= %.0fx Postfix): %s (%s)"
                   % (TARGET_RATIO, "MET" if t["met"] else "NOT MET", fmt_ratio(t["ratio"])))
    t = report.get("relay_target")
    if t:
        out.append("Relay target (end to end, Tern >= %.0fx Postfix at %s sessions): %s (%s)"
                   % (RELAY_TARGET_RATIO, " and ".join(str(s) for s, _l in RELAY_PROFILES),
                      "MET" if t["met"] else "NOT MET",
                      ", ".join(fmt_ratio(x) for x in t["ratios"])))
        out.append("Tern's queue grows at steady state on the accept-all sink: %s"
                   % ("YES (%s sessions)" % " and ".join(str(x) for x in t["tern_queue_grows_at_sessions"])
                      if t["tern_queue_grows"] else "no"))
    tls = report.get("tls")
    if tls:
        out.append("")
        out.append("STARTTLS, 20 concurrent sessions, self-signed RSA-2048 (median of %d)"
                   % report["reps"])
        out.append("  %-36s %9s %9s %9s" % ("", "Tern", "Postfix", "Tern/Pfx"))
        for kind, label in (("handshakes", "handshakes/s (STARTTLS, QUIT)"),
                            ("messages", "messages/s over TLS (50 x 5 KiB each)")):
            t, pf = tls[kind].get("tern_median"), tls[kind].get("postfix_median")
            out.append("  %-36s %9s %9s %9s" % (label, fmt_rate(t), fmt_rate(pf),
                                                 fmt_ratio(t / pf if t and pf else None)))
        idle = tls.get("idle")
        if idle:
            out.append("  ternd memory per idle TLS session (%d sessions): %s KiB (target <= %d KiB)"
                       % (idle.get("up", 0), idle.get("per_session_kib", "?"), TLS_IDLE_TARGET_KIB))
        out.append("")
    mil = report.get("milter")
    if mil:
        r, k, c = mil["msg_per_s"], mil["kept"], mil["cost_us_per_msg"]
        out.append("Milters, receive-only, %d sessions x 5 KiB, messages/s (median of %d)"
                   % (mil["profile"]["sessions"], report["reps"]))
        out.append("  %-22s %9s %9s %9s %11s %11s %11s"
                   % ("", "Tern", "Postfix", "Tern/Pfx", "Tern kept", "Pfx kept", "us/msg T/P"))
        for key, label in (("", "no milter"), ("+null", "null milter (NR)"),
                           ("+opendkim", "opendkim signing")):
            t, pf = r.get("tern" + key), r.get("postfix" + key)
            out.append("  %-22s %9s %9s %9s %11s %11s %11s"
                       % (label, fmt_rate(t), fmt_rate(pf), fmt_ratio(t / pf if t and pf else None),
                          fmt_pct(k.get("tern" + key)) if key else "",
                          fmt_pct(k.get("postfix" + key)) if key else "",
                          "%s/%s" % (c.get("tern" + key), c.get("postfix" + key)) if key else ""))
        out.append("  ternd with the null milter keeps %s of its milter-less rate (target >= %.0f%%): %s"
                   % (fmt_pct(mil["target"]["kept"]), 100 * MILTER_TARGET,
                      "met" if mil["target"]["met"] else "NOT met"))
        out.append("  opendkim CPU per signed message: %s us (RSA-2048 sign, both MTAs)"
                   % mil.get("opendkim_cpu_us_per_msg"))
        out.append("")
    if "all_accepted" in report:
        out.append("All ingest smtp-source runs got 250 for every message: %s"
                   % ("yes" if report["all_accepted"] else "NO"))
    if rel:
        out.append("All relay runs delivered every message exactly once, queues drained: %s"
                   % ("yes" if rel["ok"] else "NO"))
    if tf:
        out.append("All tempfail runs delivered every message exactly once, queue drained: %s"
                   % ("yes" if tf["ok"] else "NO"))
    if report["problems"]:
        out.append("Problems (%d):" % len(report["problems"]))
        for p in report["problems"]:
            out.append("  - " + p.splitlines()[0][:300])
    out.append("Elapsed %.0f s; JSON: %s" % (report["elapsed_seconds"], report["json"]))
    return "\n".join(out)


# ---- main --------------------------------------------------------------------


_cleanup = []


def cleanup():
    while _cleanup:
        fn = _cleanup.pop()
        try:
            fn()
        except Exception as e:  # keep stopping the rest
            print("bench: cleanup: %s" % e, file=sys.stderr)


def on_signal(signum, frame):
    cleanup()
    sys.exit(128 + signum)


PHASES = ("ingest", "relay", "tempfail", "tls", "milter")


def main():
    if len(sys.argv) == 6 and sys.argv[1] == "--tempfail-sink":  # TempfailSink's child
        return tempfail_sink_main(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]),
                                  float(sys.argv[5]))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", required=True, help="build directory (bin/ternd, tests/fsyncbench)")
    ap.add_argument("--out", help="JSON output (default BUILD/bench.json)")
    ap.add_argument("--reps", type=int, default=3, help="measured runs per server and profile")
    ap.add_argument("--seconds", type=float, default=3.0, help="target length of one run")
    ap.add_argument("--fsync-seconds", type=int, default=3)
    ap.add_argument("--idle-sessions", type=int, default=1000)
    ap.add_argument("--only", default=",".join(PHASES),
                    help="comma-separated parts to run: ingest (with the durable-write limit "
                         "and idle RSS), relay, tempfail, tls (default: all)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    bad = [x for x in only if x not in PHASES]
    if bad or not only:
        ap.error("--only takes a comma-separated list of %s" % ", ".join(PHASES))

    build = os.path.abspath(args.build)
    out = args.out or os.path.join(build, "bench.json")
    if os.geteuid() != 0:
        sys.exit("bench: must run as root (the private Postfix instance needs it)")
    for path in (SMTP_SOURCE, SMTP_SINK, POSTFIX, os.path.join(build, "bin", "ternd"),
                 os.path.join(build, "bin", "tern"), os.path.join(build, "tests", "fsyncbench")):
        if not os.access(path, os.X_OK):
            sys.exit("bench: missing %s (make all tests; make deps for Postfix)" % path)

    # 1,000 idle sessions plus smtp-source's: raise the descriptor limit
    # for us and, inherited, for ternd.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, 4 * args.idle_sessions + 1024)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError) as e:
        problem("cannot raise RLIMIT_NOFILE to %d: %s" % (want, e))

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    atexit.register(cleanup)

    # Anything else keeping the CPUs busy makes every number below noisier.
    c0 = system_cpu()
    time.sleep(2)
    c1 = system_cpu()
    busy_before = round((c1[0] - c0[0]) / max(1, c1[1] - c0[1]), 3)
    if busy_before > 0.2:
        note("the machine was %.0f%% busy before the bench started: expect noisy numbers"
             % (100 * busy_before))

    t_start = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="tern-bench-")
    os.chmod(workdir, 0o755)  # Postfix's daemons run as postfix
    if not args.keep:
        _cleanup.append(lambda: shutil.rmtree(workdir, ignore_errors=True))
    else:
        note("keeping %s" % workdir)

    tern = Tern(build, workdir)
    postfix = Postfix(workdir)
    os.makedirs(tern.queue_dir, exist_ok=True)
    os.makedirs(postfix.queue_dir, exist_ok=True)
    same_fs = os.stat(tern.queue_dir).st_dev == os.stat(postfix.queue_dir).st_dev
    dev, mnt, fstype, fsopts = fs_of(workdir)
    pv = subprocess.run([POSTCONF, "-dh", "mail_version"], stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL).stdout.decode().strip()

    report = {
        "machine": {"kernel": platform.release(), "cpus": os.cpu_count(),
                    "fs_device": dev, "fs_mount": mnt, "fs_type": fstype, "fs_options": fsopts,
                    "workdir": workdir, "queues_on_same_fs": same_fs,
                    "loadavg_at_start": loadavg(), "cpu_busy_before_start": busy_before},
        "postfix_version": pv, "reps": args.reps, "run_seconds_target": args.seconds,
        "parts": only,
        "profiles": [{"sessions": s, "length": l} for s, l in PROFILES],
    }
    failed = []  # parts in which a run lost mail, duplicated it or failed

    if "ingest" in only:
        # 1. The disk, in the directory that holds both queues.
        report["durable_write_limit"] = fsync_limits(build, workdir, args.fsync_seconds)

        # 2. Ingest, both servers up for the whole phase, runs alternating.
        _cleanup.append(tern.stop)
        _cleanup.append(postfix.stop)
        note("starting ternd on 127.0.0.1:%d and Postfix on 127.0.0.1:%d" % (tern.port, postfix.port))
        tern.start()
        postfix.start()
        report["ingest"] = ingest([tern, postfix], args.reps, args.seconds, timeout=300)
        report["tern_after_ingest"] = {"pid": tern.pid, "rss_kib": proc_status(tern.pid, "VmRSS"),
                                       "hwm_kib": proc_status(tern.pid, "VmHWM"),
                                       "threads": proc_status(tern.pid, "Threads")}
        postfix.stop()
        tern.stop()
        report["tern_messages_accepted_total"] = tern.accepted_total

        lim = report["durable_write_limit"]
        for p in report["ingest"]:
            t, pf = p.get("tern_msg_per_s"), p.get("postfix_msg_per_s")
            p["ratio"] = round(t / pf, 2) if t and pf else None
            batched = lim["batched_5k" if p["length"] <= 5120 else "batched_100k"]["records_per_s"]
            p["fraction_of_batched_limit"] = round(t / batched, 4) if t and batched else None
            if t and t > batched * 1.05:
                problem("%d sessions x %d B: Tern's %.0f msg/s exceeds the measured durable-write "
                        "limit (%.0f records/s)" % (p["sessions"], p["length"], t, batched))
        target = next(p for p in report["ingest"] if (p["sessions"], p["length"]) == TARGET_PROFILE)
        report["target"] = {"profile": {"sessions": TARGET_PROFILE[0], "length": TARGET_PROFILE[1]},
                            "ratio_required": TARGET_RATIO, "ratio": target["ratio"],
                            "met": bool(target["ratio"] and target["ratio"] >= TARGET_RATIO)}
        report["all_accepted"] = all(
            r["exit"] == 0 for p in report["ingest"] for runs in p["runs"].values() for r in runs)
        if not report["all_accepted"]:
            failed.append("ingest")

    # 3. Relay end to end, Tern vs Postfix.
    if "relay" in only:
        report["relay"] = relay(build, workdir, args.reps, args.seconds)
        rows = report["relay"]["profiles"]
        ratios = [p["ratio"] for p in rows]
        report["relay_target"] = {
            "ratio_required": RELAY_TARGET_RATIO, "ratios": ratios,
            "met": bool(ratios and all(r and r >= RELAY_TARGET_RATIO for r in ratios)),
            "tern_queue_grows": any(p["tern_queue_grows"] for p in rows),
            "tern_queue_grows_at_sessions": [p["sessions"] for p in rows if p["tern_queue_grows"]]}
        if not report["relay"]["ok"]:
            failed.append("relay")

    # 4. Relay to a sink that tempfails some RCPTs once, Tern only.
    if "tempfail" in only:
        report["tempfail"] = tempfail(build, workdir, args.reps, args.seconds)
        if not report["tempfail"]["ok"]:
            failed.append("tempfail")

    # 5. STARTTLS: handshakes, messages over TLS, idle TLS sessions.
    if "tls" in only:
        report["tls"] = tls_phase(build, workdir, args.reps, args.idle_sessions)
        if not report["tls"]["ok"]:
            failed.append("tls")

    # 6. Milters: a null milter and opendkim, on both servers.
    if "milter" in only:
        report["milter"] = milter_phase(build, workdir, args.reps, args.seconds)
        if not report["milter"]["ok"]:
            failed.append("milter")

    # 7. Memory per idle session, on a fresh ternd.
    if "ingest" in only and args.idle_sessions > 0:
        note("idle-RSS: %d sessions to a fresh ternd" % args.idle_sessions)
        report["idle_rss"] = idle_rss(build, workdir, args.idle_sessions)

    report["failed_parts"] = failed
    report["problems"] = PROBLEMS
    report["elapsed_seconds"] = round(time.monotonic() - t_start, 1)
    report["json"] = out
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".tmp", "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    os.replace(out + ".tmp", out)
    print(table(report), flush=True)
    cleanup()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
