"""restr_world.py - a real Postfix and a ternd side by side with the same
restriction configurations, for tests/integration/test_restrictions_diff.py.

One Postfix instance (pfinstance.py) gets one extra smtpd service per
scenario (master.cf `-o` overrides naming main.cf parameters), ternd gets
one listener per scenario (`NAME.param = value`); both share the same
table files (hash: tables are built with both postmap and `tern map
build`). The same scripted SMTP sessions (XCLIENT for the client's name
and address) run against both, and the replies are compared.

DNS: Postfix's resolver reads /etc/resolv.conf (port 53 only), so the
scenario services run chrooted in the instance's queue directory, whose
etc/resolv.conf names a dnsmasq on a private loopback address, port 53
(the tests run as root). ternd uses the same dnsmasq (dns_servers).
"""

import os
import random
import re
import shutil
import socket
import subprocess
from pathlib import Path

import harness
from pfinstance import PostfixInstance

POSTMAP = "/usr/sbin/postmap"
PF_HOST = "mx.pf.test"
TERN_HOST = "tern.test"
MAILBOXES = {"joe@example.test": "example.test/joe/",
             "alice@example.test": "example.test/alice/",
             "all@example.test": "example.test/all/"}


class Scenario:
    """name: a short identifier (also the ternd listener name); params:
    {smtpd parameter: value} where "{dir}" stands for the table directory;
    tables: {file name: content}; hashed: file names to build as hash:."""

    def __init__(self, name, params, tables=None, hashed=()):
        self.name, self.params = name, dict(params)
        self.tables, self.hashed = dict(tables or {}), tuple(hashed)
        self.pf_port = self.tern_port = None


class ScenarioPostfix(PostfixInstance):
    def __init__(self, path, port, scenarios, tdir, main=None):
        super().__init__(path, port, myhostname=PF_HOST, mailboxes=MAILBOXES, main=main)
        self.scenarios, self.tdir = scenarios, tdir

    def master_cf(self):
        text = super().master_cf()
        for sc in self.scenarios:
            text += "127.0.0.1:%d inet n - y - - smtpd\n" % sc.pf_port
            for k in sc.params:
                text += "  -o %s=$%s_%s\n" % (k, sc.name, k)
        return text

    def main_cf(self):
        text = super().main_cf()
        for sc in self.scenarios:
            for k, v in sc.params.items():
                text += "%s_%s = %s\n" % (sc.name, k, v.replace("{dir}", str(self.tdir)))
        return text


def _dns_address():
    return "127.%d.%d.%d" % (random.randrange(60, 250), random.randrange(1, 250),
                             random.randrange(2, 250))


class World:
    """Postfix + ternd + dnsmasq for a list of scenarios."""

    def __init__(self, tmp, scenarios, dns_records, common=None):
        self.tmp = Path(tmp)
        self.scenarios = scenarios
        self.common = dict(common or {})
        self.tdir = self.tmp / "tables"
        self.progs = []
        self.dns_records = dns_records
        self.pf = None
        self.cfg = None

    # -- set-up --------------------------------------------------------------

    def _tables(self):
        self.tdir.mkdir(parents=True, exist_ok=True)
        harness.traversable(self.tdir)
        for sc in self.scenarios:
            for name, content in sc.tables.items():
                p = self.tdir / name
                p.write_text(content)
                p.chmod(0o644)
                if name in sc.hashed:
                    subprocess.run([POSTMAP, "hash:%s" % p], check=True)
                    harness.run_tern("map", "build", "hash:%s" % p, check=True)

    def _dns(self):
        self.dns_addr = _dns_address()
        argv = harness.dnsmasq_argv(53, **self.dns_records)
        argv = [a if not a.startswith("--listen-address=") else
                "--listen-address=%s" % self.dns_addr for a in argv]
        argv.append("--no-dhcp-interface=lo")
        # dnsmasq binds the address only if it exists: lo holds 127/8.
        prog = harness.start_program(
            argv, self.tmp / "logs", name="dnsmasq",
            ready=lambda: _answers(self.dns_addr))
        self.progs.append(prog)

    def _postfix(self):
        ports = harness.free_ports(2 * len(self.scenarios) + 1)
        for i, sc in enumerate(self.scenarios):
            sc.pf_port, sc.tern_port = ports[2 * i], ports[2 * i + 1]
        main = {"smtpd_authorized_xclient_hosts": "127.0.0.0/8",
                "smtpd_soft_error_limit": "100", "smtpd_hard_error_limit": "100",
                "smtpd_junk_command_limit": "1000"}
        main.update({k: v.replace("{dir}", str(self.tdir)) for k, v in self.common.items()})
        self.pf = ScenarioPostfix(self.tmp / "postfix", ports[-1], self.scenarios, self.tdir,
                                  main=main)
        # The chroot jail (queue directory) needs a resolver configuration.
        etc = self.pf.queue_dir / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text("nameserver %s\noptions attempts:1 timeout:2\n"
                                         % self.dns_addr)
        for f in ("services", "hosts", "localtime", "nsswitch.conf", "host.conf"):
            if os.path.exists("/etc/" + f):
                shutil.copy("/etc/" + f, etc / f)
        self.pf.start()

    def _ternd(self):
        self.cfg = harness.ConfigDir(self.tmp / "tern")
        vbase = self.cfg.path / "vmail"
        vbase.mkdir(exist_ok=True)
        harness.give_to_mail_owner(vbase)
        self.cfg.set(myhostname=TERN_HOST, smtpd_peername_lookup="no",
                     mydestination="", local_recipient_maps="", alias_maps="",
                     virtual_mailbox_domains="example.test",
                     virtual_mailbox_maps="inline:{ %s }" % ", ".join(
                         "%s=%s" % kv for kv in MAILBOXES.items()),
                     virtual_mailbox_base=str(vbase),
                     smtpd_authorized_xclient_hosts="127.0.0.0/8",
                     smtpd_soft_error_limit="100", smtpd_hard_error_limit="100",
                     smtpd_junk_command_limit="1000",
                     smtpd_client_connection_count_limit="0",
                     mynetworks="127.0.0.0/8",
                     dns_servers="%s@53" % self.dns_addr)
        for k, v in self.common.items():
            self.cfg.set(k, v.replace("{dir}", str(self.tdir)))
        for sc in self.scenarios:
            self.cfg.set("listen_%s" % sc.name, "127.0.0.1:%d" % sc.tern_port)
            for k, v in sc.params.items():
                self.cfg.set("%s.%s" % (sc.name, k), v.replace("{dir}", str(self.tdir)))
        prog = harness.start_program(
            [harness.tern_bin("ternd"), "-f", "-c", str(self.cfg.path)], self.tmp / "logs",
            name="ternd", ready=[sc.tern_port for sc in self.scenarios])
        self.progs.append(prog)
        self.ternd = prog

    def start(self):
        self._tables()
        self._dns()
        self._postfix()
        self._ternd()
        return self

    def stop(self):
        if self.pf:
            self.pf.stop()
        for p in reversed(self.progs):
            p.stop()

    def logs(self):
        return "ternd:\n%s\npostfix maillog:\n%s" % (
            self.ternd.stderr()[-6000:], self.pf.maillog()[-6000:] if self.pf else "")


def _answers(addr):
    try:
        harness.dns_query("ready.invalid", "A", 53, host=addr, timeout=0.3)
        return True
    except OSError:
        return False


# --- sessions -------------------------------------------------------------------

MESSAGE = "Subject: restriction test\r\n\r\nhello\r\n.\r\n"


def run_session(port, commands, timeout=10.0):
    """Send each command and collect the reply (all lines joined by '|').
    "<MESSAGE>" sends a small message after a 354. Stops at a closed
    connection ("CLOSED")."""
    out = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        f = s.makefile("rb")
        try:
            out.append(("<greeting>", _reply(f)))
            for cmd in commands:
                if cmd == "<MESSAGE>" and not out[-1][1].startswith("354"):
                    continue  # DATA was refused: nothing to send
                if cmd.startswith("<PIPE>"):  # several commands in one write
                    parts = cmd[6:].split("|")
                    s.sendall("".join(p + "\r\n" for p in parts).encode())
                    out.append((cmd, " || ".join(_reply(f) for _ in parts)))
                    continue
                if cmd == "<BDAT>":  # the message in one BDAT LAST chunk
                    body = MESSAGE[:-3]
                    s.sendall(("BDAT %d LAST\r\n%s" % (len(body), body)).encode())
                else:
                    s.sendall((MESSAGE if cmd == "<MESSAGE>" else cmd + "\r\n").encode())
                out.append((cmd, _reply(f)))
        except (ConnectionError, OSError):
            out.append((cmd if out else "<greeting>", "CLOSED"))
    return out


def _reply(f):
    lines = []
    while True:
        line = f.readline(4096)
        if not line:
            if lines:
                return "|".join(lines)
            raise ConnectionError("closed")
        line = line.decode("utf-8", "replace").rstrip("\r\n")
        lines.append(line)
        if len(line) < 4 or line[3] == " ":
            return "|".join(lines)


def normalize(cmd, reply):
    """What must be equal: greetings, EHLO and HELO replies differ by
    host name and extensions only; queue IDs differ."""
    if reply == "CLOSED":
        return reply
    code = reply[:3]
    if cmd.startswith("<PIPE>"):
        return re.sub(r"queued as [0-9A-Za-z]+", "queued as ID", reply)
    if code == "220" or cmd.upper().startswith(("EHLO", "XCLIENT")) and code in ("250", "220"):
        return code
    if cmd.upper().startswith("HELO") and code == "250":
        return code
    reply = re.sub(r"queued as [0-9A-Za-z]+", "queued as ID", reply)
    reply = reply.replace(PF_HOST, "HOST").replace(TERN_HOST, "HOST")
    return reply
