#!/usr/bin/python3
"""milter_dkim_bench.py - messages/s through tern-dkim-milter and opendkim,
signing (RSA-2048) and verifying, same key, same messages, same run,
against the machine's raw `openssl speed -multi CORES rsa2048` sign rate.

    /usr/bin/python3 tests/bench/milter_dkim_bench.py --build build [--seconds 5] [--clients 4]
        [--runs 3] [--tcp]

Both milters are driven over loopback by the same C load generator
(tests/tools/milterload.c, built as $(BUILD)/tests/milterload): --clients
connections, each sending messages back to back on its milter session,
and a message counts only if the milter's answer added a DKIM-Signature
(signing) or an Authentication-Results with dkim=pass (verifying).
Public keys for verifying come from a key file (tern: test_public_keys,
opendkim: TestPublicKeys), so no DNS is involved. The milters listen on
UNIX-domain sockets (as a local Postfix usually reaches them: Debian's
opendkim default), or with --tcp on loopback TCP. Over TCP opendkim
stalls about 40 ms at every end of message: it answers every packet
(no SMFIP_NR_*), so the MTA's side of the connection goes into delayed
ACKs, and its two end-of-message writes (the added field, then the final
reply) meet Nagle's algorithm: the second waits for the ACK of the
first (libmilter never sets TCP_NODELAY). That caps it near 22
messages/s per connection whatever its CPU cost, so the TCP
tern/opendkim ratios measure the stall, not the work; Tern's milters set
TCP_NODELAY on their listening socket and do not stall.

The raw rate (openssl speed -multi CORES rsa2048) is measured before
each signing run, and the milters are compared with the highest: the
machine at its best (t/raw); t/adj compares each run with the raw rate
measured right before it, which saw about the same machine. Other load on the machine lowers both the milters'
rates and, a lot, the -multi figure, so t/raw is only meaningful on a
quiet machine. The CPU columns (the milter's CPU time per message, and
the load generator's) hardly depend on that load, nor does one openssl
process's rate (it divides by CPU time); "t eff", one signature's CPU
time over a signed message's (milter plus load generator), is what t/raw
would be on an otherwise idle machine whose cores sign independently.

The "floor" case sends the unsigned message from an outside client: no
signature to make and none to check, so each milter only answers with an
Authentication-Results "dkim=none". Its CPU per message is what the
milter protocol costs a libmilter milter (the reads and polls for each
packet, the worker pool's hand-off between messages) plus the milter's
own bookkeeping; the "ceiling" is one signature's CPU time over that
floor plus a signature plus the load generator's share: the highest t eff
a milter built on libmilter could reach here if signing cost nothing but
the RSA operation.
Each run is printed, then the medians.
"""

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BODY = (b"Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n" * 80)  # ~4.6 KiB


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listen(where, timeout=10):
    """where: a TCP port on 127.0.0.1 or a UNIX-domain socket's path."""
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if isinstance(where, int):
                socket.create_connection(("127.0.0.1", where), timeout=0.2).close()
            else:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(where))
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on %s" % where)


HEADERS = [("From", "alice@example.com"), ("To", "bob@example.org"), ("Subject", "bench"),
           ("Date", "Sat, 21 Nov 2026 09:00:00 +0000"), ("Message-ID", "<1@bench>")]


def message_file(path, signed):
    """The message milterload sends: headers (a DKIM-Signature first when
    verifying), an empty line, the body."""
    h = ([("DKIM-Signature", signed)] if signed else []) + HEADERS
    text = "".join("%s: %s\n" % (k, v) for k, v in h) + "\n" + BODY.decode().replace("\r\n", "\n")
    path.write_text(text)
    return path


def cpu_seconds(pid):
    """user + system CPU time of a process (all its threads)."""
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cpu_ticks():
    """(steal, total) jiffies of all CPUs from /proc/stat (steal: CPU time
    the hypervisor gave to other guests)."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return (f[7] if len(f) > 7 else 0), sum(f[:8])


def measured(load, pid, endpoint, addr, seconds, clients, msgfile, want):
    """(messages/s, milter CPU us per message, load generator CPU us per
    message); a run with a failed message is an error."""
    c0, d0, s0 = cpu_seconds(pid), children_cpu(), cpu_ticks()
    p = subprocess.run([str(load), "-c", str(clients), "-t", str(seconds), "-w", "0.5",
                        "-a", addr, "-f", str(msgfile)] + want + [endpoint],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    c1, d1, s1 = cpu_seconds(pid), children_cpu(), cpu_ticks()
    if p.returncode != 0:
        raise RuntimeError("milterload failed: %s %s" % (p.stdout, p.stderr))
    r = json.loads(p.stdout)
    # The warm-up's messages were processed too: CPU per message over all.
    n = max(r["messages"] * (r["seconds"] + 0.5) / r["seconds"], 1)
    steal = (s1[0] - s0[0]) / max(s1[1] - s0[1], 1)
    return r["rate"], 1e6 * (c1 - c0) / n, 1e6 * (d1 - d0) / n, steal


def openssl_rate(seconds, procs):
    """Total RSA-2048 sign/s of `procs` openssl processes."""
    cmd = ["openssl", "speed", "-seconds", str(seconds)]
    if procs > 1:
        cmd += ["-multi", str(procs)]
    out = subprocess.run(cmd + ["rsa2048"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True).stdout
    m = re.search(r"rsa 2048 bits\s+\S+\s+\S+\s+([0-9.]+)", out)
    return float(m.group(1)) if m else 0.0


def signed_header(key):
    import dkim
    raw = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in HEADERS)
    sig = dkim.sign(raw + b"\r\n" + BODY, b"sel1", b"example.com", open(key, "rb").read(),
                    canonicalize=(b"relaxed", b"simple"))
    return sig.decode().split(":", 1)[1].strip().replace("\r\n", "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--clients", type=int, default=os.cpu_count() * 2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tcp", action="store_true", help="loopback TCP, not UNIX-domain sockets")
    a = ap.parse_args()
    load = Path(a.build) / "tests" / "milterload"
    if not load.exists():
        sys.exit("%s missing: make BUILD=... tests" % load)
    cores = os.cpu_count()
    tmp = Path(tempfile.mkdtemp(prefix="tern-dkim-bench-"))
    os.chmod(tmp, 0o755)
    procs = []
    try:
        subprocess.run([str(Path(a.build) / "bin" / "tern-dkim-milter"), "genkey", "-d",
                        "example.com", "-s", "sel1", "-D", str(tmp)], check=True,
                       stdout=subprocess.DEVNULL)
        key = tmp / "sel1.private"
        os.chmod(key, 0o644)
        txt = "".join(re.findall(r'"([^"]*)"', (tmp / "sel1.txt").read_text()))
        (tmp / "keys").write_text("sel1._domainkey.example.com %s\n" % txt)
        if not a.tcp:
            tsock, osock = tmp / "tern.sock", tmp / "opendkim.sock"
            tspec, ospec = "unix:%s" % tsock, "local:%s" % osock
            tend, oend = "unix:%s" % tsock, "unix:%s" % osock
        else:
            tsock, osock = free_port(), free_port()
            tspec, ospec = "inet:%d@127.0.0.1" % tsock, "inet:%d@127.0.0.1" % osock
            tend, oend = "inet:127.0.0.1:%d" % tsock, "inet:127.0.0.1:%d" % osock
        (tmp / "tern.conf").write_text(
            "socket = %s\nuser =\ndomain = example.com\nselector = sel1\n"
            "key_file = %s\ntest_public_keys = %s/keys\n" % (tspec, key, tmp))
        (tmp / "opendkim.conf").write_text(
            "Mode sv\nDomain example.com\nSelector sel1\nKeyFile %s\nSocket %s\n"
            "InternalHosts 127.0.0.1\nCanonicalization relaxed/simple\nOversignHeaders From\n"
            "AlwaysAddARHeader yes\n"
            "TestPublicKeys %s/keys\nRequireSafeKeys false\nBackground false\nSyslog false\n"
            % (key, ospec, tmp))
        procs.append(subprocess.Popen([str(Path(a.build) / "bin" / "tern-dkim-milter"), "-f",
                                       "-c", str(tmp / "tern.conf")],
                                      stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(["/usr/sbin/opendkim", "-f", "-x",
                                       str(tmp / "opendkim.conf")], stderr=subprocess.DEVNULL))
        wait_listen(tsock)
        wait_listen(osock)
        unsigned = message_file(tmp / "unsigned.eml", None)
        signed = message_file(tmp / "signed.eml", signed_header(key))
        cases = (("sign", "127.0.0.1", unsigned, ["-e", "DKIM-Signature"]),
                 ("verify", "192.0.2.1", signed, ["-e", "Authentication-Results", "-m",
                                                  "dkim=pass"]),
                 ("floor", "192.0.2.1", unsigned, ["-e", "Authentication-Results", "-m",
                                                   "dkim=none"]))
        print("load before: %s; milters on %s" % (open("/proc/loadavg").read().strip(),
                                                 "TCP" if a.tcp else "UNIX-domain sockets"))
        rows, raws, raw1s = [], [], []
        for run in range(1, a.runs + 1):
            for what, addr, msgfile, want in cases:
                if what == "sign":
                    # the -multi rate right before the milter's run: the
                    # pair sees about the same machine
                    raw1s.append(openssl_rate(a.seconds, 1))
                    raws.append(openssl_rate(a.seconds, cores))
                t, tcpu, tl, tsteal = measured(load, procs[0].pid, tend, addr, a.seconds, a.clients,
                                       msgfile, want)
                o, ocpu, ol, _ = measured(load, procs[1].pid, oend, addr, a.seconds, a.clients,
                                       msgfile, want)
                rows.append((run, what, raws[-1] if what == "sign" else 0, t, o, tcpu, ocpu, tl,
                             "%.0f%%" % (100 * tsteal)))
                print("run %d %s done" % (run, what), file=sys.stderr, flush=True)
        print("load after: %s" % open("/proc/loadavg").read().strip())
        # The milters are compared with the machine at its best: the
        # highest raw rate of the run (raw/s shows each measurement).
        raw, raw1 = max(raws), max(raw1s)
        print("%-3s %-6s %7s %8s %8s %7s %6s %6s %6s %8s %8s %8s %6s %5s" % (
            "run", "", "raw/s", "tern/s", "odkim/s", "t/odkim", "t/raw", "t/adj", "o/raw",
            "tern CPU", "odkimCPU", "load CPU", "t eff", "steal"))
        effs, adjs = [], []
        for run, what, r, t, o, tcpu, ocpu, tl, ld in rows:
            sign = what == "sign"
            # One signature's CPU time (one openssl process, which counts
            # CPU time and so hardly minds other load) over what a signed
            # message cost the milter and the load generator: what t/raw
            # would be on an otherwise idle machine.
            eff = 1e6 / raw1 / (tcpu + tl)
            if sign:
                effs.append(eff)
                adjs.append(t / r if r else 0)
            print("%-3d %-6s %7s %8.0f %8.0f %7.2f %6s %6s %6s %5.0f us %5.0f us %5.0f us %6s %5s" % (
                run, what, "%.0f" % r if sign else "-", t, o, t / o if o else 0,
                "%.0f%%" % (100 * t / raw) if sign else "-",
                "%.0f%%" % (100 * t / r) if sign and r else "-",
                "%.0f%%" % (100 * o / raw) if sign else "-", tcpu, ocpu, tl,
                "%.0f%%" % (100 * eff) if sign else "-", ld))
        med = lambda v: sorted(v)[len(v) // 2]
        for what in ("sign", "verify", "floor"):
            rs = [x for x in rows if x[1] == what]
            print("median of %d runs, %s: tern %.0f msg/s, opendkim %.0f, tern/opendkim %.2f%s"
                  % (len(rs), what, med([x[3] for x in rs]), med([x[4] for x in rs]),
                     med([x[3] / x[4] if x[4] else 0 for x in rs]),
                     "; tern/raw %.0f%% (raw %.0f sign/s on %d cores), t/adj %.0f%%, "
                     "t eff %.0f%% (one core: %.0f us per signature)"
                     % (100 * med([x[3] for x in rs]) / raw, raw, cores, 100 * med(adjs),
                        100 * med(effs), 1e6 / raw1)
                     if what == "sign" else ""))
        floor = med([x[5] for x in rows if x[1] == "floor"])
        load = med([x[7] for x in rows if x[1] == "sign"])
        print("floor: tern-dkim-milter %.0f us of CPU per message that needs no crypto; "
              "ceiling for t eff with that floor and the load generator's %.0f us: %.0f%%"
              % (floor, load, 100 * (1e6 / raw1) / (1e6 / raw1 + floor + load)))
        print("raw/s: openssl speed -multi %d rsa2048 sign/s before each signing run; t/raw "
              "and o/raw against the highest, t/adj against the one measured right before the same "
              "run; CPU: per message, of each milter and of the load "
              "generator (tern run); t eff: one signature's CPU time (openssl speed rsa2048, "
              "one process, fastest run) over tern CPU + load CPU; steal: the share of the VM's CPU "
              "time the hypervisor gave to others during the tern run; floor: an unsigned message "
              "from outside, answered with dkim=none (no crypto)" % cores)
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
