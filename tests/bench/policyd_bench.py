#!/usr/bin/python3
"""policyd_bench.py - tern-policyd against postgrey and pypolicyd-spf on
this machine, answering the same RCPT-stage requests in the same run.

    make bench-policyd          (as root; about 2 minutes)
    /usr/bin/python3 tests/bench/policyd_bench.py --build build [--seconds 3] [--out FILE]

Everything runs on loopback: one dnsmasq on 127.53.53.53:53 answers the
SPF records of the sender domains with a one-hour TTL, as published SPF
records usually have (tern-policyd is pointed at it with
dns_servers; pypolicyd-spf, which reads /etc/resolv.conf, runs in a
private mount namespace whose /etc/resolv.conf names it — the system's
file is never touched). pypolicyd-spf is a stdin/stdout program: it runs
under `systemd-socket-activate --inetd`, one process per connection, as
its documentation suggests for a TCP test.

The request mix: Postfix-shaped RCPT requests from 50 client networks,
200 senders in 20 SPF-publishing domains, 90 % of them for triplets that
passed greylisting in a warm-up (known), 10 % new triplets (a fresh
recipient each). Each server is measured with 1 and 50 concurrent
connections (tests/tools/policyload.c: each connection sends a request,
waits for its reply and sends the next, as a Postfix smtpd does; one
epoll loop drives all of them, so the client takes little of the two
cores), for --seconds each after --warmup seconds on the same
connections:

  tern-policyd access+greylist+ratelimit   (the issue's 20,000 req/s target)
  tern-policyd access+spf+greylist+ratelimit
  tern-policyd greylist      vs  postgrey
  tern-policyd spf           vs  pypolicyd-spf
  trivial C server (policyload -S: read a request, answer DUNNO, one
  epoll loop per CPU): the ceiling this machine and this client allow

Each row is measured --repeat times (default 2) and the fastest kept, for
every server alike: on a virtual machine the hypervisor's steal time
comes and goes, and the fastest run is the machine at its best. Prints a
table (requests/s, p50 and p99 latency, the CPU the load client used, in
cores, the steal share during the kept measurement) and the ratios; writes every run's numbers as JSON to
--out (default BUILD/policyd-bench.json). A run that answered nothing
(e.g. pypolicyd-spf still starting its processes) counts as failed.
"""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from policyd_helpers import encode, full_request  # noqa: E402

DNS_ADDR = "127.53.53.53"
DOMAINS = ["sdom%d.example" % i for i in range(20)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, host="127.0.0.1", timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on %s:%d" % (host, port))


class World:
    def __init__(self, build, tmp):
        self.build, self.tmp = Path(build), Path(tmp)
        self.procs = []

    def spawn(self, argv, name, **kw):
        log = open(self.tmp / (name + ".log"), "wb")
        p = subprocess.Popen([str(a) for a in argv], stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def stop(self, p):
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def stop_all(self):
        for p in reversed(self.procs):
            self.stop(p)

    # -- peers ------------------------------------------------------------------

    def dnsmasq(self):
        argv = ["/usr/sbin/dnsmasq", "--keep-in-foreground", "--port=53",
                "--listen-address=" + DNS_ADDR, "--bind-interfaces", "--no-resolv", "--no-hosts",
                "--conf-file=/dev/null", "--pid-file=", "--local=/#/", "--user=root",
                "--local-ttl=3600"]
        for d in DOMAINS:
            argv.append("--txt-record=%s,v=spf1 ip4:192.0.2.0/24 ip4:198.51.100.0/24 -all" % d)
        p = self.spawn(argv, "dnsmasq")
        time.sleep(0.5)
        if p.poll() is not None:    # e.g. another dnsmasq holds 127.53.53.53:53
            raise RuntimeError("dnsmasq did not start: %s"
                               % (self.tmp / "dnsmasq.log").read_text().strip())

    def policyd(self, name, checks, **extra):
        d = self.tmp / name
        d.mkdir()
        os.chmod(d, 0o777)
        port = free_port()
        conf = {"listen": "inet:127.0.0.1:%d" % port, "checks": checks,
                "pid_file": d / "pid", "state": "lmdb:%s" % (d / "state"),
                "maillog_file": d / "log", "dns_servers": DNS_ADDR + "@53",
                "greylist_delay": "1s", "myhostname": "bench.test",
                "sender_access": "inline:{ {spammer@bad.example = REJECT no} }",
                "client_access": "cidr:{ {203.0.113.0/24 REJECT bad net} }",
                "ratelimit_rules": "sender:messages:1000000/1h, client_net:recipients:10000000/1h",
                "worker_threads": "4"}
        conf.update(extra)
        (d / "policyd.conf").write_text("".join("%s = %s\n" % kv for kv in conf.items()))
        # daemon mode, as in production (logging to a file, not a terminal)
        subprocess.run([self.build / "bin" / "tern-policyd", "-c", d / "policyd.conf"], check=True)
        pid = int((d / "pid").read_text())
        self.procs.append(_Pid(pid))
        wait_port(port)
        return port, pid

    def postgrey(self):
        d = self.tmp / "postgrey"
        d.mkdir()
        shutil.chown(d, "postgrey", "postgrey")
        port = free_port()
        empty = self.tmp / "empty"
        empty.write_text("")
        self.spawn(["/usr/sbin/postgrey", "--inet=127.0.0.1:%d" % port, "--dbdir=%s" % d,
                    "--delay=1", "--pidfile=%s/pid" % d, "--whitelist-clients=%s" % empty,
                    "--whitelist-recipients=%s" % empty, "--quiet"], "postgrey")
        wait_port(port)
        return port

    def policyd_spf(self):
        d = self.tmp / "pyspf"
        d.mkdir()
        (d / "resolv.conf").write_text("nameserver %s\n" % DNS_ADDR)
        (d / "policyd-spf.conf").write_text(
            "debugLevel = 0\nTestOnly = 1\nHELO_reject = Fail\nMail_From_reject = Fail\n"
            "PermError_reject = False\nTempError_Defer = False\n"
            "skip_addresses = 127.0.0.0/8,::ffff:127.0.0.0/104,::1\n")
        port = free_port()
        script = ("mount --bind %s /etc/resolv.conf && exec systemd-socket-activate --accept --inetd "
                  "-l 127.0.0.1:%d /usr/bin/policyd-spf %s" % (
                      d / "resolv.conf", port, d / "policyd-spf.conf"))
        self.spawn(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                   "policyd-spf")
        wait_port(port)
        return port

    def trivial(self):
        port = free_port()
        self.spawn([self.build / "tests" / "policyload", "-S", "-c", str(os.cpu_count() or 1),
                    "inet:127.0.0.1:%d" % port], "trivial")
        wait_port(port)
        return port


class _Pid:
    """A daemon we started by PID (tern-policyd in the background)."""

    def __init__(self, pid):
        self.pid = pid

    def poll(self):
        try:
            os.kill(self.pid, 0)
            return None
        except ProcessLookupError:
            return 0

    def wait(self, timeout=None):
        deadline = time.monotonic() + (timeout or 10)
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.poll() is None:
            raise subprocess.TimeoutExpired("tern-policyd", timeout)


def requests(rng):
    """(warm-up requests, measured requests) as policyload input text."""
    known, new = [], []
    for i in range(400):
        net = rng.randrange(50)
        attrs = dict(client_address="192.0.2.%d" % (net + 1) if net < 25 else
                     "198.51.100.%d" % (net + 1),
                     client_name="mx%d.sdom.example" % net, helo_name="mx%d.sdom.example" % net,
                     sender="user%d@%s" % (i % 200, DOMAINS[i % 20]),
                     recipient="rcpt%d@example.test" % (i % 100), instance="{seq}")
        known.append(encode(full_request(**attrs)))
        attrs["recipient"] = "new{seq}@example.test"
        new.append(encode(full_request(**attrs)))
    mix = []
    for i in range(1000):
        mix.append(new[i % len(new)] if i % 10 == 0 else known[i % len(known)])
    return "".join(known), "".join(mix)


def cpu_ticks():
    """(steal, total) jiffies of all CPUs from /proc/stat: on a virtual
    machine the hypervisor may give the guest's CPUs to others (steal),
    which slows every row without showing as load in here."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return (f[7] if len(f) > 7 else 0), sum(f[:8])


def load(build, port, conns, seconds, reqfile, warm=0):
    s0 = cpu_ticks()
    p = subprocess.run([str(build / "tests" / "policyload"), "-c", str(conns), "-t", str(seconds),
                        "-w", str(warm), "-f", str(reqfile), "inet:127.0.0.1:%d" % port],
                       capture_output=True, text=True, timeout=seconds + 120)
    if not p.stdout.strip():
        raise RuntimeError("policyload: %s" % p.stderr)
    s1 = cpu_ticks()
    r = json.loads(p.stdout)
    r["steal"] = (s1[0] - s0[0]) / max(s1[1] - s0[1], 1)
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(REPO / "build"))
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--warmup", type=float, default=3,
                    help="seconds on the same connections before measuring (pypolicyd-spf "
                         "starts one Python process per connection)")
    ap.add_argument("--repeat", type=int, default=2,
                    help="measure each row this many times and keep the fastest (every server "
                         "alike: the machine at its best, as the hypervisor's steal comes and goes)")
    ap.add_argument("--out")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    build = Path(args.build).resolve()
    if os.getuid() != 0:
        sys.exit("policyd_bench.py: run as root (postgrey's user, a private mount namespace)")
    tmp = Path(tempfile.mkdtemp(prefix="tern-policyd-bench-"))
    os.chmod(tmp, 0o755)
    w = World(build, tmp)
    rng = random.Random(8)
    warm, mix = requests(rng)
    (tmp / "warm").write_text(warm)
    (tmp / "mix").write_text(mix)
    results = []
    try:
        w.dnsmasq()
        servers = [
            ("tern-policyd access+greylist+ratelimit", lambda: w.policyd("agr", "access, greylist, ratelimit")[0]),
            # next to the row above, so both see about the same machine load
            ("trivial C server (ceiling)", w.trivial),
            ("tern-policyd access+spf+greylist+ratelimit", lambda: w.policyd("full", "access, spf, greylist, ratelimit")[0]),
            ("tern-policyd greylist", lambda: w.policyd("grey", "greylist")[0]),
            ("postgrey 1.37 (greylist)", w.postgrey),
            ("tern-policyd spf", lambda: w.policyd("spf", "spf")[0]),
            ("pypolicyd-spf 3.0.4 (spf)", w.policyd_spf),
        ]
        for name, start in servers:
            port = start()
            # pypolicyd-spf starts a Python process per connection: 50 of
            # them need more than a few seconds on two busy cores
            warmup = max(args.warmup, 15) if name.startswith("pypolicyd") else args.warmup
            # warm-up: every known triplet seen, then passed (delay 1 s)
            load(build, port, 4, 1.0, tmp / "warm")
            time.sleep(1.2)
            load(build, port, 4, 1.0, tmp / "warm")
            for conns in (1, 50):
                tries = [load(build, port, conns, args.seconds, tmp / "mix", warm=warmup)
                         for _ in range(max(args.repeat, 1))]
                r = max(tries, key=lambda x: x["rate"])
                r.update(server=name, conns=conns, tries=[round(x["rate"]) for x in tries],
                         failures=sum(x["failures"] for x in tries))
                if r["requests"] == 0:
                    r["failures"] = max(r["failures"], 1)
                results.append(r)
                print("%-45s %3d conn  %9.0f req/s  p50 %6d us  p99 %7d us  client %.2f cores  "
                      "steal %2.0f%%  %s" % (
                          name, conns, r["rate"], r["p50_us"], r["p99_us"], r.get("client_cpu", 0),
                          100 * r["steal"], r["actions"]), file=sys.stderr, flush=True)
    finally:
        w.stop_all()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    by = {(r["server"], r["conns"]): r for r in results}
    print("load average at the end: %.2f %.2f %.2f (other work on this machine skews every row)"
          % os.getloadavg())
    print("| server | conns | requests/s | p50 (ms) | p99 (ms) | client CPU (cores) | steal | failures |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print("| %s | %d | %.0f | %.2f | %.2f | %.2f | %.0f%% | %d |" % (
            r["server"], r["conns"], r["rate"], r["p50_us"] / 1000, r["p99_us"] / 1000,
            r.get("client_cpu", 0), 100 * r["steal"], r["failures"]))
    print("each row: the fastest of %d measurements (requests/s of each: %s); steal: the share "
          "of this VM's CPU time the hypervisor gave to others during that measurement (it "
          "slows the row; 0 on real hardware)" % (
              max(args.repeat, 1), "; ".join("%s/%d: %s" % (r["server"].split(" (")[0], r["conns"],
                                                            r["tries"]) for r in results)))
    print()

    def ratio(a, b, conns):
        x, y = by.get((a, conns)), by.get((b, conns))
        if not x or not y or not x["requests"] or not y["requests"]:
            return "n/a"
        return "%.1fx" % (x["rate"] / y["rate"])

    for conns in (1, 50):
        print("%d conn: tern-policyd/postgrey %s, tern-policyd/pypolicyd-spf %s, "
              "access+greylist+ratelimit/trivial server %s" % (
                  conns, ratio("tern-policyd greylist", "postgrey 1.37 (greylist)", conns),
                  ratio("tern-policyd spf", "pypolicyd-spf 3.0.4 (spf)", conns),
                  ratio("tern-policyd access+greylist+ratelimit", "trivial C server (ceiling)",
                        conns)))
    out = Path(args.out or build / "policyd-bench.json")
    out.write_text(json.dumps(results, indent=1))
    failed = [r for r in results if r["failures"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
