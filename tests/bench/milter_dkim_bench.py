#!/usr/bin/python3
"""milter_dkim_bench.py - messages/s through tern-dkim-milter and opendkim,
signing (RSA-2048) and verifying, same key, same messages, same run,
against the machine's raw `openssl speed rsa2048` sign rate.

    /usr/bin/python3 tests/bench/milter_dkim_bench.py --build build [--seconds 5] [--clients 4]

Both milters are driven over loopback by the same protocol client
(tests/integration/milterclient.py), one process per client connection,
each sending messages back to back on its session. Public keys for
verifying come from a key file (tern: test_public_keys, opendkim:
TestPublicKeys), so no DNS is involved. The client is Python: if the two
milters come out equal, suspect the client and raise --clients.
"""

import argparse
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))
from milterclient import MilterClient  # noqa: E402

BODY = (b"Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n" * 80)  # ~4.6 KiB


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on %d" % port)


def headers(i, signed):
    h = [("From", "alice@example.com"), ("To", "bob@example.org"),
         ("Subject", "bench %d" % i), ("Date", "Sat, 21 Nov 2026 09:00:00 +0000"),
         ("Message-ID", "<%d@bench>" % i)]
    return ([("DKIM-Signature", signed)] if signed else []) + h


def client(port, addr, seconds, signed, q):
    c = MilterClient(port)
    c.connect(addr=addr, **{"{client_addr}": addr, "j": "mx.bench"})
    c.helo()
    n, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        mods, final = c.message("alice@example.com", ["bob@example.org"], headers(n, signed),
                                BODY, qid="Q%d" % n)
        assert final[0] in (b"c", b"a"), final           # opendkim answers accept
        assert any(m[0] in (b"i", b"h") for m in mods), mods  # DKIM-Signature or A-R added
        n += 1
    c.close()
    q.put(n)


def run(port, addr, seconds, clients, signed=None):
    q = multiprocessing.Queue()
    ps = [multiprocessing.Process(target=client, args=(port, addr, seconds, signed, q))
          for _ in range(clients)]
    t0 = time.monotonic()
    for p in ps:
        p.start()
    total = sum(q.get() for _ in ps)
    for p in ps:
        p.join()
    return total / (time.monotonic() - t0)


def cpu_seconds(pid):
    """user + system CPU time of a process (all its threads)."""
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(pid, port, addr, seconds, clients, signed):
    """(messages/s, CPU microseconds of the milter per message)."""
    c0, t0 = cpu_seconds(pid), time.monotonic()
    rate = run(port, addr, seconds, clients, signed)
    n = rate * (time.monotonic() - t0)
    return rate, 1e6 * (cpu_seconds(pid) - c0) / max(n, 1)


def openssl_rate(seconds):
    out = subprocess.run(["openssl", "speed", "-seconds", str(seconds), "rsa2048"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    m = re.search(r"rsa 2048 bits\s+\S+\s+\S+\s+([0-9.]+)", out)
    return float(m.group(1)) if m else 0.0


def signed_header(key):
    import dkim
    raw = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in headers(0, None))
    sig = dkim.sign(raw + b"\r\n" + BODY, b"sel1", b"example.com", open(key, "rb").read(),
                    canonicalize=(b"relaxed", b"simple"))
    return sig.decode().split(":", 1)[1].strip().replace("\r\n", "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--clients", type=int, default=os.cpu_count() * 2)
    a = ap.parse_args()
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
        tport, oport = free_port(), free_port()
        (tmp / "tern.conf").write_text(
            "socket = inet:%d@127.0.0.1\nuser =\ndomain = example.com\nselector = sel1\n"
            "key_file = %s\ntest_public_keys = %s/keys\n" % (tport, key, tmp))
        (tmp / "opendkim.conf").write_text(
            "Mode sv\nDomain example.com\nSelector sel1\nKeyFile %s\nSocket inet:%d@127.0.0.1\n"
            "InternalHosts 127.0.0.1\nCanonicalization relaxed/simple\nOversignHeaders From\n"
            "TestPublicKeys %s/keys\nRequireSafeKeys false\nBackground false\nSyslog false\n"
            % (key, oport, tmp))
        procs.append(subprocess.Popen([str(Path(a.build) / "bin" / "tern-dkim-milter"), "-f",
                                       "-c", str(tmp / "tern.conf")],
                                      stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(["/usr/sbin/opendkim", "-f", "-x",
                                       str(tmp / "opendkim.conf")], stderr=subprocess.DEVNULL))
        wait_port(tport)
        wait_port(oport)
        sig = signed_header(key)
        raw = openssl_rate(a.seconds)
        rows = []
        for what, addr, signed in (("sign", "127.0.0.1", None), ("verify", "192.0.2.1", sig)):
            t, tcpu = measured(procs[0].pid, tport, addr, a.seconds, a.clients, signed)
            o, ocpu = measured(procs[1].pid, oport, addr, a.seconds, a.clients, signed)
            rows.append((what, t, o, tcpu, ocpu))
        cores = os.cpu_count()
        print("openssl speed rsa2048: %.0f sign/s per core (%.0f us each), %.0f on %d cores"
              % (raw, 1e6 / raw if raw else 0, raw * cores, cores))
        print("%-7s %11s %11s %10s %9s %13s %13s" % (
            "", "tern msg/s", "odkim msg/s", "tern/odkim", "tern/raw", "tern CPU/msg",
            "odkim CPU/msg"))
        for what, t, o, tcpu, ocpu in rows:
            print("%-7s %11.0f %11.0f %10.2f %9s %10.0f us %10.0f us" % (
                what, t, o, t / o if o else 0,
                "%.0f%%" % (100 * t / (raw * cores)) if what == "sign" and raw else "-",
                tcpu, ocpu))
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
