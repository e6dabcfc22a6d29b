#!/usr/bin/python3
"""make bench: Tern vs Postfix, receive-only durable ingest, on this machine.

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
3. ternd's RSS with 1,000 idle SMTP sessions.

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
import time

SMTP_SOURCE = "/usr/sbin/smtp-source"
POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
MASTER_CF = "/etc/postfix/master.cf"
SENDER = "bench@client.example"
RECIPIENT = "user@dest.example"  # smtp-source -N makes it 1user@..., 2user@...

# (sessions, message length) in the order they run.
PROFILES = [(1, 5120), (20, 5120), (100, 5120), (1, 102400), (20, 102400), (100, 102400)]
TARGET_PROFILE = (20, 5120)
TARGET_RATIO = 10.0

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

    def __init__(self, build, workdir):
        self.build = build
        self.dir = os.path.join(workdir, "tern")
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
        conf = [
            "# make bench: receive-only, everything to discard",
            "listen_smtp = 127.0.0.1:%d" % self.port,
            "myhostname = bench.local",
            "mydestination =",
            "mynetworks = 127.0.0.0/8",
            "default_transport = discard",
            "relay_transport = discard",
            "queue_directory = %s" % self.queue_dir,
            "data_directory = %s" % os.path.join(self.dir, "data"),
            "mail_owner = %s" % owner,
            "alias_maps =",
            "local_recipient_maps =",
            "smtpd_client_connection_count_limit = 0",
            "smtpd_client_connection_rate_limit = 0",
            "maillog_file = %s" % os.path.join(self.dir, "maillog"),
        ]
        with open(os.path.join(self.dir, "tern.conf"), "w") as f:
            f.write("\n".join(conf) + "\n")
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

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "postfix")
        self.conf = os.path.join(self.dir, "conf")
        self.queue_dir = os.path.join(self.dir, "queue")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.started = False
        self.master_pid = None

    def master_cf(self):
        """/etc/postfix/master.cf without chroot, smtpd on our port, no pipe
        services (their users need not exist)."""
        drop = {"maildrop", "uucp", "ifmail", "bsmtp", "scalemail-backend", "mailman"}
        out, skipping = [], False
        with open(MASTER_CF) as f:
            for line in f:
                if line.startswith("#") or not line.strip():
                    out.append(line)
                    continue
                if line[0].isspace():  # continuation of the entry above
                    if not skipping:
                        out.append(line)
                    continue
                fields = line.split()
                skipping = fields[0] in drop
                if skipping:
                    continue
                if len(fields) >= 8:
                    if fields[0] == "smtp" and fields[1] == "inet":
                        fields[0] = "127.0.0.1:%d" % self.port
                    if fields[4] == "y":
                        fields[4] = "n"
                    line = "%-10s %-5s %-7s %-7s %-7s %-7s %-7s %s\n" % (
                        fields[0], fields[1], fields[2], fields[3], fields[4],
                        fields[5], fields[6], " ".join(fields[7:]))
                out.append(line)
        return "".join(out)

    def main_cf(self):
        return "\n".join([
            "# make bench: a private Postfix instance, receive-only, to discard",
            "compatibility_level = 3.6",
            "queue_directory = %s" % self.queue_dir,
            "data_directory = %s" % self.data,
            "mail_owner = postfix",
            "setgid_group = postdrop",
            "inet_interfaces = 127.0.0.1",
            "inet_protocols = ipv4",
            "myhostname = bench.local",
            "mydestination =",
            "mynetworks = 127.0.0.0/8",
            "default_transport = discard",
            "relay_transport = discard",
            "local_transport = discard",
            "smtpd_relay_restrictions = permit_mynetworks, reject",
            "smtpd_client_connection_count_limit = 0",
            "smtpd_client_connection_rate_limit = 0",
            "default_process_limit = 200",
            "# no maillog_file: postlogd makes smtpd hang on this machine",
            "",
        ])

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


def ingest(servers, reps, seconds, timeout):
    """Every profile on every server, alternating; a short warm-up run per
    (server, profile) sizes the measured runs to about `seconds` each."""
    results = []
    for sessions, length in PROFILES:
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


# ---- output ------------------------------------------------------------------


def table(report):
    lim = report["durable_write_limit"]
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
    out.append("Durable-write limit (append + fdatasync, same filesystem as the queues)")
    out.append("  %-34s %10s %10s %9s" % ("", "syncs/s", "records/s", "MiB/s"))
    for key, label in (("single_5k", "5 KiB, 1 record per fdatasync"),
                       ("batched_5k", "5 KiB, 20 records per fdatasync"),
                       ("batched_100k", "100 KiB, 20 records per fdatasync")):
        r = lim[key]
        out.append("  %-34s %10.0f %10.0f %9.1f"
                   % (label, r["syncs_per_s"], r["records_per_s"], r["MiB_per_s"]))
    out.append("")
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
    t = report.get("target")
    if t:
        out.append("Target (20 sessions, 5 KiB, Tern >= %.0fx Postfix): %s (%s)"
                   % (TARGET_RATIO, "MET" if t["met"] else "NOT MET", fmt_ratio(t["ratio"])))
    out.append("All smtp-source runs got 250 for every message: %s"
               % ("yes" if report["all_accepted"] else "NO"))
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", required=True, help="build directory (bin/ternd, tests/fsyncbench)")
    ap.add_argument("--out", help="JSON output (default BUILD/bench.json)")
    ap.add_argument("--reps", type=int, default=3, help="measured runs per server and profile")
    ap.add_argument("--seconds", type=float, default=3.0, help="target length of one run")
    ap.add_argument("--fsync-seconds", type=int, default=3)
    ap.add_argument("--idle-sessions", type=int, default=1000)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()

    build = os.path.abspath(args.build)
    out = args.out or os.path.join(build, "bench.json")
    if os.geteuid() != 0:
        sys.exit("bench: must run as root (the private Postfix instance needs it)")
    for path in (SMTP_SOURCE, POSTFIX, os.path.join(build, "bin", "ternd"),
                 os.path.join(build, "tests", "fsyncbench")):
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
        "profiles": [{"sessions": s, "length": l} for s, l in PROFILES],
    }

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

    # 3. Memory per idle session, on a fresh ternd.
    if args.idle_sessions > 0:
        note("idle-RSS: %d sessions to a fresh ternd" % args.idle_sessions)
        report["idle_rss"] = idle_rss(build, workdir, args.idle_sessions)

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
    return 0 if report["all_accepted"] else 1


if __name__ == "__main__":
    sys.exit(main())
