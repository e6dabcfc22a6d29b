"""test_resolver.py - shared/resolver.c against a real DNS server.

Runs build/tests/dnsq (sync and -a async on libevent) against dnsmasq on a
loopback port (the `dns` fixture): MX ordering and null MX, A/AAAA, PTR,
TXT joining, forward-confirmed client names, and the distinction between
NXDOMAIN, no data and temporary failure (exit 1 / 2 / 4) that mail routing
depends on.
"""

import subprocess
import time

import pytest

import harness

FOUND, NXDOMAIN, NODATA, NULLMX, TEMPFAIL = 0, 1, 2, 3, 4

MODES = [pytest.param([], id="sync"), pytest.param(["-a"], id="async")]


def dnsq(server, qtype, name, mode=(), timeout=5):
    argv = [harness.tool_bin("dnsq"), "-s", server, "-t", str(timeout)] + list(mode)
    proc = subprocess.run(argv + [qtype, name], capture_output=True, text=True, timeout=30)
    return proc.returncode, proc.stdout.splitlines(), proc.stderr


@pytest.fixture
def zone(dns):
    return dns(
        mx={"example.test": [(20, "mx2.example.test"), (10, "mx1.example.test")],
            "nullmx.test": [(0, ".")]},
        a={"mx1.example.test": ["192.0.2.10"], "mx2.example.test": ["192.0.2.20"],
           "liar.example.test": ["192.0.2.99"]},
        aaaa={"mx1.example.test": ["2001:db8::10"]},
        txt={"example.test": [("v=spf1 ip4:192.0.2.0/24 ", "-all")],
             "_dmarc.example.test": ["v=DMARC1; p=none"]},
        ptr={"192.0.2.30": "liar.example.test", "192.0.2.20": "mx2.example.test"},
    )


@pytest.mark.parametrize("mode", MODES)
def test_mx_sorted_by_preference(zone, mode):
    rc, out, err = dnsq(zone.server, "MX", "example.test", mode)
    assert (rc, out) == (FOUND, ["10 mx1.example.test", "20 mx2.example.test"]), err


@pytest.mark.parametrize("mode", MODES)
def test_null_mx_is_distinct(zone, mode):
    rc, out, err = dnsq(zone.server, "MX", "nullmx.test", mode)
    assert (rc, out) == (NULLMX, []), err
    assert "null MX" in err


@pytest.mark.parametrize("mode", MODES)
def test_addresses(zone, mode):
    assert dnsq(zone.server, "A", "mx1.example.test", mode)[:2] == (FOUND, ["192.0.2.10"])
    assert dnsq(zone.server, "AAAA", "mx1.example.test", mode)[:2] == (FOUND, ["2001:db8::10"])


@pytest.mark.parametrize("mode", MODES)
def test_txt_strings_joined(zone, mode):
    assert dnsq(zone.server, "TXT", "example.test", mode)[:2] == \
        (FOUND, ["v=spf1 ip4:192.0.2.0/24 -all"])
    assert dnsq(zone.server, "TXT", "_dmarc.example.test", mode)[:2] == \
        (FOUND, ["v=DMARC1; p=none"])


@pytest.mark.parametrize("mode", MODES)
def test_ptr_from_address(zone, mode):
    assert dnsq(zone.server, "PTR", "192.0.2.10", mode)[:2] == (FOUND, ["mx1.example.test"])
    assert dnsq(zone.server, "PTR", "2001:db8::10", mode)[:2] == (FOUND, ["mx1.example.test"])


@pytest.mark.parametrize("mode", MODES)
def test_nxdomain_and_nodata(zone, mode):
    rc, out, err = dnsq(zone.server, "A", "nosuch.example.test", mode)
    assert (rc, out) == (NXDOMAIN, []), err
    rc, out, err = dnsq(zone.server, "AAAA", "mx2.example.test", mode)
    assert (rc, out) == (NODATA, []), err
    rc, out, err = dnsq(zone.server, "MX", "mx1.example.test", mode)
    assert (rc, out) == (NODATA, []), err


def test_verified_client_name(zone):
    # PTR and A agree: the name is verified.
    assert dnsq(zone.server, "VERIFY", "192.0.2.10")[:2] == (FOUND, ["mx1.example.test"])
    assert dnsq(zone.server, "VERIFY", "2001:db8::10")[:2] == (FOUND, ["mx1.example.test"])
    # PTR says liar.example.test, whose A record is another address.
    rc, out, err = dnsq(zone.server, "VERIFY", "192.0.2.30")
    assert (rc, out) == (NODATA, []) and "does not resolve" in err
    # No PTR at all.
    assert dnsq(zone.server, "VERIFY", "192.0.2.77")[0] == NXDOMAIN


@pytest.mark.parametrize("mode", MODES)
def test_server_down_is_temporary(mode):
    # Nothing listens on this port: a timeout, never "no such domain".
    port = harness.free_port()
    start = time.monotonic()
    rc, out, err = dnsq("127.0.0.1@%d" % port, "MX", "example.test", mode, timeout=2)
    assert (rc, out) == (TEMPFAIL, []), err
    assert time.monotonic() - start < 10


def test_refused_is_temporary(dns):
    # Not authoritative for the name: dnsmasq refuses, unbound reports
    # SERVFAIL; mail must be deferred, not bounced.
    server = dns(local=(), a={"known.example.test": ["192.0.2.1"]})
    rc, out, err = dnsq(server.server, "A", "other.example.org")
    assert (rc, out) == (TEMPFAIL, []), err


def test_usage_and_bad_server():
    assert dnsq("127.0.0.1@53", "SOA", "example.test")[0] == 64
    rc, out, err = dnsq("not-an-address", "A", "example.test")
    assert rc == TEMPFAIL and "dns_servers" in err
