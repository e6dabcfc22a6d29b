"""test_harness.py - tests of the integration-test harness itself.

The test DNS must answer what it was given (MX, A, AAAA, TXT, PTR) and
nothing else; programs must start, be waited for and be stopped; free
ports must really be free. If these fail, no other integration test
result can be trusted.
"""

import re
import signal
import socket
import sys

import pytest

import harness

PY = sys.executable


@pytest.fixture
def zone(dns):
    return dns(mx={"example.com": [(10, "mx1.example.com"), (20, "mx2.example.com")]},
               a={"mx1.example.com": ["192.0.2.1"], "mx2.example.com": "192.0.2.2"},
               aaaa={"mx1.example.com": ["2001:db8::1"]},
               txt={"example.com": ["v=spf1 ip4:192.0.2.0/24 -all"],
                    "sel._domainkey.example.com": ["v=DKIM1; k=rsa; p=" + "A" * 400]},
               ptr={"192.0.2.2": "other.example.net", "2001:db8::99": "v6.example.com"})


def test_dns_mx(zone):
    r = zone.query("example.com", "MX")
    assert r.rcode == "NOERROR"
    assert sorted(r.values("MX")) == [(10, "mx1.example.com"), (20, "mx2.example.com")]


def test_dns_a_aaaa(zone):
    assert zone.query("mx1.example.com", "A").values("A") == ["192.0.2.1"]
    assert zone.query("mx1.example.com", "AAAA").values("AAAA") == ["2001:db8::1"]
    assert zone.query("mx2.example.com", "AAAA").values("AAAA") == []


def test_dns_txt(zone):
    assert zone.query("example.com", "TXT").values("TXT") == [("v=spf1 ip4:192.0.2.0/24 -all",)]
    # Over 512 octets: truncated over UDP, fetched again over TCP; the
    # value is published in 255-octet strings.
    (dkim,) = zone.query("sel._domainkey.example.com", "TXT").values("TXT")
    assert max(len(s) for s in dkim) == 255
    assert "".join(dkim) == "v=DKIM1; k=rsa; p=" + "A" * 400


def test_dns_ptr(zone):
    assert zone.query("1.2.0.192.in-addr.arpa", "PTR").values("PTR") == ["mx1.example.com"]
    # An explicit ptr replaces the one --host-record would make.
    assert zone.query("2.2.0.192.in-addr.arpa", "PTR").values("PTR") == ["other.example.net"]
    rev = harness._reverse_name("2001:db8::99")
    assert zone.query(rev, "PTR").values("PTR") == ["v6.example.com"]


def test_dns_negative_answers(zone):
    assert zone.query("nx.example.com", "A").rcode == "NXDOMAIN"
    nodata = zone.query("example.com", "A")
    assert nodata.rcode == "NOERROR" and nodata.answers == []
    assert zone.query("anything.invalid", "MX").rcode == "NXDOMAIN"


def test_dns_server_string(zone):
    assert zone.server == "127.0.0.1@%d" % zone.port
    assert zone.port != 53


def test_dns_parser_rejects_malformed():
    with pytest.raises(ValueError):
        harness.dns_parse_reply(b"\x00\x01")
    # An answer count of 1 with no answer section.
    with pytest.raises(ValueError):
        harness.dns_parse_reply(b"\x00\x01\x81\x80\x00\x00\x00\x01\x00\x00\x00\x00")
    # A compression pointer that points at itself must not loop forever.
    loop = b"\x00\x01\x81\x80\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01"
    with pytest.raises(ValueError):
        harness.dns_parse_reply(loop)
    with pytest.raises(ValueError):
        harness.dns_build_query("a..b", "A")


def test_dns_query_roundtrip_encoding():
    q = harness.dns_build_query("Example.COM", "MX", qid=0x1234)
    assert q[:2] == b"\x12\x34"
    assert q[12:] == b"\x07Example\x03COM\x00\x00\x0f\x00\x01"


def test_free_ports_distinct_and_bindable():
    ports = harness.free_ports(5)
    assert len(set(ports)) == 5
    for p in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", p))
        if harness.HAS_IPV6:
            with socket.socket(socket.AF_INET6) as s:
                s.bind(("::1", p))


def test_free_port_skips_busy_port():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        assert not harness._port_is_free(taken)


SERVER = r"""
import socket, sys, time
print("starting", flush=True)
time.sleep(float(sys.argv[2]))
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
print("listening on", sys.argv[1], flush=True)
print("to stderr", file=sys.stderr, flush=True)
while True:
    c, _ = s.accept()
    try:
        c.sendall(b"220 test ESMTP\r\n"); c.recv(100); c.sendall(b"221 bye\r\n")
    except OSError:
        pass  # the readiness probe connects and hangs up at once
    c.close()
"""


def test_program_ready_on_port(start_program):
    port = harness.free_port()
    prog = start_program([PY, "-c", SERVER, port, "0.3"], ready=port, name="server")
    assert prog.alive
    assert harness.smtp_greeting(port) == (220, ["test ESMTP"])
    assert "to stderr" in prog.stderr() or harness.wait_for(lambda: "to stderr" in prog.stderr())
    assert prog.stop() == -signal.SIGTERM and prog.stopped_cleanly()


def test_program_ready_on_log_line(start_program):
    port = harness.free_port()
    prog = start_program([PY, "-c", SERVER, port, "0"], ready=re.compile(r"listening on \d+"))
    assert "starting" in prog.stdout()


def test_program_exit_before_ready(start_program):
    with pytest.raises(harness.ProgramError, match="exited before it was ready"):
        start_program([PY, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"],
                      ready=harness.free_port(), check_exit=False)


def test_program_not_ready_times_out(tmp_path):
    with pytest.raises(harness.ProgramError, match="not ready after"):
        harness.start_program([PY, "-c", "import time; time.sleep(30)"], tmp_path,
                              ready="never printed", timeout=0.5)


def test_program_ignoring_sigterm_is_killed(tmp_path):
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    prog = harness.start_program([PY, "-c", code], tmp_path, ready="up")
    rc = prog.stop(grace=0.5)
    assert rc == -signal.SIGKILL and prog.killed and not prog.stopped_cleanly()
    assert "needed SIGKILL" in prog.logs()


def test_config_dir_minimal(config_dir, tern_build):
    text = config_dir.conf_path.read_text()
    assert "inet_interfaces = loopback-only" in text
    assert "queue_directory = %s" % config_dir.queue_directory in text
    assert "maillog_file = %s" % config_dir.maillog_file in text
    assert "listen_smtp = 127.0.0.1:%d" % config_dir.smtp_port in text
    config_dir.set("smtps.smtpd_tls_wrappermode", "yes").set(smtpd_banner="x y")
    config_dir.set(smtpd_banner="z")
    config_dir.append("# raw line")
    text = config_dir.conf_path.read_text()
    assert text.count("smtpd_banner") == 1 and "smtpd_banner = z" in text
    assert "smtps.smtpd_tls_wrappermode = yes" in text
    assert text.rstrip().endswith("# raw line")
    p = config_dir.write_table("access", "a OK\n")
    assert p.read_text() == "a OK\n" and p.parent == config_dir.path


def test_config_dir_use_dns(config_dir, dns):
    server = dns(a={"h.example": "192.0.2.7"})
    config_dir.use_dns(server)
    assert "dns_servers = %s" % server.server in config_dir.conf_path.read_text()
