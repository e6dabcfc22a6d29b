"""tern-policyd's SPF check against a dnsmasq on a loopback port: every
RFC 7208 result (pass, fail, softfail, neutral, none, permerror for a
broken record and for too many lookups, temperror for a DNS server that
refuses), the HELO identity, pypolicyd-spf's reply texts, the headers
(once per message) and the skips. Client addresses are never loopback:
libspf2 passes 127/8 unconditionally.
"""

import re
import socket
import time

import pytest

from policyd_helpers import PolicyServer, encode, full_request

TXT = {
    "pass.example": ["v=spf1 ip4:192.0.2.0/24 -all"],
    "soft.example": ["v=spf1 ip4:192.0.2.0/24 ~all"],
    "neutral.example": ["v=spf1 ?all"],
    "broken.example": ["v=spf1 ip4:300.1.1.1 -all"],
    "loop.example": ["v=spf1 " + " ".join("a:h%d.loop.example" % i for i in range(12)) + " -all"],
    "badhelo.example": ["v=spf1 -all"],
    "goodhelo.example": ["v=spf1 ip4:192.0.2.0/24 -all"],
    "v6.example": ["v=spf1 ip6:2001:db8::/32 -all"],
}

IP_OK, IP_BAD = "192.0.2.10", "203.0.113.5"


@pytest.fixture
def spf_server(start_program, dns, tmp_path):
    zone = dns(txt=TXT, a={"h%d.loop.example" % i: ["198.51.100.%d" % (i + 1)] for i in range(12)})
    made = []

    def make(name="spf", server=None, **settings):
        settings.setdefault("dns_timeout", "5s")
        srv = PolicyServer(start_program, tmp_path / name, checks="spf",
                           dns_servers=server or zone.server, **settings)
        made.append(srv)
        return srv.start()

    return make


def spf_req(c, sender, ip=IP_OK, helo="mail.example.org", **kw):
    kw.setdefault("instance", "%s-%s-%s" % (sender, ip, helo))
    return c.request(sender=sender, client_address=ip, helo_name=helo, **kw)


def test_spf_results_and_default_actions(spf_server):
    c = spf_server().client()
    a = spf_req(c, "alice@pass.example")
    assert re.fullmatch(r"PREPEND Received-SPF: pass \([^()]*\) client-ip=192\.0\.2\.10; "
                        r"envelope-from=alice@pass\.example; helo=mail\.example\.org; "
                        r"receiver=policy\.test; identity=mailfrom", a), a
    assert spf_req(c, "alice@pass.example", IP_BAD) == (
        "550 5.7.23 Message rejected due to: SPF fail - not authorized. Please see "
        "http://www.openspf.net/Why?s=mfrom;id=alice@pass.example;ip=203.0.113.5;r=policy.test")
    assert spf_req(c, "bob@soft.example", IP_BAD).startswith("PREPEND Received-SPF: softfail (")
    assert spf_req(c, "bob@neutral.example", IP_BAD).startswith("PREPEND Received-SPF: neutral (")
    assert spf_req(c, "bob@nospf.example", IP_BAD).startswith("PREPEND Received-SPF: none (")
    assert spf_req(c, "bob@broken.example", IP_BAD).startswith("PREPEND Received-SPF: permerror (")
    assert spf_req(c, "bob@loop.example", IP_BAD).startswith("PREPEND Received-SPF: permerror (")
    assert spf_req(c, "carol@v6.example", "2001:db8::25").startswith("PREPEND Received-SPF: pass (")
    assert spf_req(c, "carol@v6.example", "2001:db9::25").startswith("550 5.7.23 ")


def test_spf_temperror_and_configured_actions(spf_server, dns):
    refusing = dns(local=(), txt={"other.example": ["v=spf1 -all"]})
    c = spf_server("t1", server=refusing.server).client()
    assert spf_req(c, "bob@pass.example").startswith("PREPEND Received-SPF: temperror (")
    c = spf_server("t2", server=refusing.server, spf_temperror_action="defer",
                   spf_softfail_action="reject", spf_neutral_action="dunno",
                   spf_permerror_action="451 4.7.24 fix your SPF record").client()
    assert spf_req(c, "bob@pass.example") == (
        "DEFER_IF_PERMIT 4.7.24 Message deferred due to: SPF temperror - temporary DNS failure. "
        "Please see http://www.openspf.net/Why?s=mfrom;id=bob@pass.example;ip=192.0.2.10;r=policy.test")
    c = spf_server("t3", spf_softfail_action="reject", spf_neutral_action="dunno",
                   spf_permerror_action="451 4.7.24 fix your SPF record").client()
    assert spf_req(c, "x@soft.example", IP_BAD).startswith("550 5.7.23 Message rejected due to: SPF softfail")
    assert spf_req(c, "x@neutral.example", IP_BAD) == "DUNNO"
    assert spf_req(c, "x@broken.example", IP_BAD) == "451 4.7.24 fix your SPF record"


def test_spf_helo_identity(spf_server):
    srv = spf_server()
    c = srv.client()
    # HELO fail rejects even when MAIL FROM would pass (HELO_reject = Fail)
    assert spf_req(c, "alice@pass.example", IP_OK, helo="badhelo.example") == (
        "550 5.7.23 Message rejected due to: SPF fail - not authorized. Please see "
        "http://www.openspf.net/Why?s=helo;id=badhelo.example;ip=192.0.2.10;r=policy.test")
    # the null sender is checked with the HELO identity
    a = spf_req(c, "", IP_OK, helo="goodhelo.example")
    assert a.startswith("PREPEND Received-SPF: pass (") and "identity=helo" in a
    assert 'envelope-from=""' in a
    srv.wait_log(r"checks=spf=helo:fail, action=550 5\.7\.23")


def test_spf_once_per_message_and_skips(spf_server):
    srv = spf_server()
    c = srv.client()
    assert spf_req(c, "a@pass.example", instance="m1", recipient="r1@example.test").startswith("PREPEND Received-SPF")
    assert spf_req(c, "a@pass.example", instance="m1", recipient="r2@example.test") == "DUNNO"
    srv.wait_log(r"checks=spf=pass\(cached\), action=DUNNO")
    # a failing message stays refused for every recipient (cached verdict)
    assert spf_req(c, "a@pass.example", IP_BAD, instance="m2").startswith("550 5.7.23")
    assert spf_req(c, "a@pass.example", IP_BAD, instance="m2", recipient="r2@example.test").startswith("550 5.7.23")
    # authenticated clients and loopback are not checked
    assert spf_req(c, "a@pass.example", IP_BAD, sasl_username="alice") == "DUNNO"
    assert spf_req(c, "a@pass.example", "127.0.0.1") == "DUNNO"
    srv.wait_log(r"checks=spf=skipped")


def test_spf_whitelists_and_authentication_results(spf_server):
    c = spf_server(spf_whitelist_clients="203.0.113.0/24", spf_whitelist_domains="soft.example",
                   spf_header_type="authentication-results", spf_authserv_id="mx.policy.test").client()
    assert spf_req(c, "a@pass.example", IP_BAD) == "DUNNO"
    assert spf_req(c, "a@sub.soft.example", "198.51.100.9") == "DUNNO"
    a = spf_req(c, "a@pass.example", IP_OK)
    assert re.fullmatch(r"PREPEND Authentication-Results: mx\.policy\.test; spf=pass \([^()]*\) "
                        r"smtp\.mailfrom=a@pass\.example", a), a


def test_spf_does_not_block_other_clients(spf_server):
    """A DNS server that never answers delays only the SPF request."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        srv = spf_server("slow", server="127.0.0.1@%d" % silent.getsockname()[1],
                         worker_threads="2", dns_timeout="2s")
        slow = srv.client()
        slow.send_raw(encode(full_request(sender="a@pass.example", client_address=IP_BAD)))
        time.sleep(0.2)
        fast = srv.client()
        t0 = time.monotonic()
        for i in range(20):
            assert spf_req(fast, "x%d@y.example" % i, "127.0.0.1") == "DUNNO"   # skipped: no DNS
        assert time.monotonic() - t0 < 1.0
        assert slow.read_reply()["action"].startswith("PREPEND Received-SPF: temperror")
    finally:
        silent.close()


def test_spf_concurrent_clients(spf_server):
    """Many clients at once on four workers sharing libspf2's server and
    DNS cache: every answer is the right one."""
    import threading
    srv = spf_server("many", worker_threads="4")
    cases = [("a@pass.example", IP_OK, "PREPEND Received-SPF: pass ("),
             ("a@pass.example", IP_BAD, "550 5.7.23 "),
             ("b@soft.example", IP_BAD, "PREPEND Received-SPF: softfail ("),
             ("b@broken.example", IP_BAD, "PREPEND Received-SPF: permerror ("),
             ("b@nospf%d.example", IP_BAD, "PREPEND Received-SPF: none (")]
    errors = []

    def client(n):
        try:
            c = srv.client()
            for i in range(10):
                sender, ip, want = cases[(n + i) % len(cases)]
                got = spf_req(c, sender.replace("%d", str(n)), ip, instance="c%d-%d" % (n, i))
                if not got.startswith(want):
                    errors.append((sender, ip, got))
        except Exception as e:      # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []


# --- result cache ------------------------------------------------------------


def test_spf_cache_hit_answers_without_a_worker(start_program, dns, tmp_path):
    """A cached result is given on the event loop: with the only worker
    stuck on a DNS server that never answers, a message from a sender
    whose result is cached is answered at once, with the texts a fresh
    check gives (the comment and envelope-from name the new sender)."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        zone = dns(txt=TXT, extra=["--local-ttl=300", "--server=/slow.example/127.0.0.1#%d"
                                   % silent.getsockname()[1]])
        srv = PolicyServer(start_program, tmp_path / "hit", checks="spf",
                           dns_servers=zone.server, dns_timeout="3s",
                           worker_threads="1").start()
        c = srv.client()
        first = spf_req(c, "a@pass.example", IP_OK, instance="m1")
        assert first.startswith("PREPEND Received-SPF: pass (")
        srv.wait_log(r"instance=m1, .*checks=spf=pass, action=")
        slow = srv.client()
        slow.send_raw(encode(full_request(sender="x@slow.example", client_address=IP_BAD,
                                          instance="stuck")))
        time.sleep(0.3)
        t0 = time.monotonic()
        second = spf_req(srv.client(), "b@pass.example", IP_OK, instance="m2")
        assert time.monotonic() - t0 < 1.0
        assert second == first.replace("a@pass.example", "b@pass.example")
        srv.wait_log(r"instance=m2, .*checks=spf=pass\(hit\), action=")
        assert slow.read_reply()["action"].startswith("PREPEND Received-SPF: temperror")
    finally:
        silent.close()


def test_spf_cache_expiry_and_off(spf_server, dns):
    """spf_cache_max_ttl bounds how long a result is used; fail results
    are kept too; spf_cache_size = 0 keeps nothing."""
    zone = dns(txt=TXT, extra=["--local-ttl=300"])
    srv = spf_server("ttl", server=zone.server, spf_cache_max_ttl="1s")
    c = srv.client()
    assert spf_req(c, "a@pass.example", IP_BAD, instance="f1").startswith("550 5.7.23 ")
    assert spf_req(c, "a@pass.example", IP_BAD, instance="f2").startswith("550 5.7.23 ")
    srv.wait_log(r"instance=f2, .*checks=spf=fail\(hit\), action=550")
    time.sleep(1.2)
    assert spf_req(c, "a@pass.example", IP_BAD, instance="f3").startswith("550 5.7.23 ")
    srv.wait_log(r"instance=f3, .*checks=spf=fail, action=550")
    off = spf_server("off", server=zone.server, spf_cache_size="0")
    c = off.client()
    for i in range(2):
        assert spf_req(c, "a@pass.example", IP_OK, instance="o%d" % i).startswith(
            "PREPEND Received-SPF: pass (")
    off.wait_log(r"instance=o1, .*checks=spf=pass, action=")
    assert "(hit)" not in off.log()


def test_spf_cache_bounded_by_dns_ttl(spf_server):
    """Answers with no lifetime (TTL 0, as this dnsmasq gives by default)
    do not make a result cacheable on their own: the result is kept once
    libspf2's DNS cache holds the answers, and no longer than it does."""
    srv = spf_server("ttl0")
    c = srv.client()
    for i in range(3):
        assert spf_req(c, "a@pass.example", IP_OK, instance="t%d" % i).startswith(
            "PREPEND Received-SPF: pass (")
    srv.wait_log(r"instance=t0, .*checks=spf=pass, action=")
    srv.wait_log(r"instance=t2, .*checks=spf=pass\(hit\), action=")


def test_spf_cache_local_part_macro(start_program, dns, tmp_path):
    """A record that uses the sender's local part (%{l}) gives each local
    part its own cache entry: a cached pass for one user is not another
    user's result."""
    zone = dns(txt={"macro.example": ["v=spf1 exists:%{l}.allow.macro.example -all"]},
               a={"good.allow.macro.example": ["127.0.0.2"]}, extra=["--local-ttl=300"])
    srv = PolicyServer(start_program, tmp_path / "macro", checks="spf",
                       dns_servers=zone.server, dns_timeout="5s").start()
    c = srv.client()
    assert spf_req(c, "good@macro.example", IP_BAD, instance="g1").startswith(
        "PREPEND Received-SPF: pass (")
    assert spf_req(c, "bad@macro.example", IP_BAD, instance="b1").startswith("550 5.7.23 ")
    assert spf_req(c, "good@macro.example", IP_BAD, instance="g2").startswith(
        "PREPEND Received-SPF: pass (")
    assert spf_req(c, "bad@macro.example", IP_BAD, instance="b2").startswith("550 5.7.23 ")
    srv.wait_log(r"instance=g2, .*checks=spf=pass\(hit\)")
    srv.wait_log(r"instance=b2, .*checks=spf=fail\(hit\)")
