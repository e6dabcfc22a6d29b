"""tern-policyd from the outside: the policy protocol (malformed, huge,
partial, pipelined and persistent requests), access tables and
restriction classes, per-message memory, greylisting (postgrey
semantics, policy_test_time), rate limits (LMDB across a restart),
BCC decisions, reload and daemon mode.

Every request carries Postfix's full attribute set (policyd_helpers.py);
clients use non-loopback addresses as XCLIENT would give them.
"""

import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

import harness
from policyd_helpers import PolicyClient, PolicyServer, encode, full_request

GREY = "DEFER_IF_PERMIT 4.2.0 Greylisted, see http://postgrey.schweikert.ch/help/example.test.html"


@pytest.fixture
def policyd(start_program, tmp_path):
    made = []

    def make(name="pd", **settings):
        srv = PolicyServer(start_program, tmp_path / name, **settings)
        made.append(srv)
        return srv

    return make


# --- protocol ---------------------------------------------------------------


def test_persistent_connection_many_requests(policyd):
    srv = policyd(checks="access", sender_access="inline:{ {bad@example.com = REJECT no} }").start()
    c = srv.client()
    for i in range(500):
        sender = "bad@example.com" if i % 7 == 0 else "u%d@example.org" % i
        want = "REJECT no" if i % 7 == 0 else "DUNNO"
        assert c.request(sender=sender, instance="i%d" % i) == want, i
    c.close()


def test_pipelined_requests_answered_in_order(policyd):
    srv = policyd(checks="access", sender_access="inline:{ {bad@example.com = REJECT no} }").start()
    c = srv.client()
    senders = ["bad@example.com" if i % 3 == 0 else "ok%d@example.org" % i for i in range(60)]
    c.send_raw("".join(encode(full_request(sender=s, instance="p%d" % i))
                       for i, s in enumerate(senders)))
    for s in senders:
        reply = c.read_reply()
        assert reply is not None
        assert reply["action"] == ("REJECT no" if s.startswith("bad") else "DUNNO")


@pytest.mark.parametrize("checks", ["access", "access, spf"], ids=["inline", "workers"])
def test_half_close_after_pipelined_requests(policyd, checks):
    """printf 'request=...\\n\\n...' | nc: the client shuts its side after
    writing; every request still gets its reply, then the server closes."""
    srv = policyd(checks=checks, dns_servers="127.0.0.1@9",
                  sender_access="inline:{ {bad@example.com = REJECT no} }").start()
    c = srv.client()
    senders = ["bad@example.com", "ok@example.org"] * 5
    c.send_raw("".join(encode(full_request(sender=x, client_address="127.0.0.1", instance="h%d" % i))
                       for i, x in enumerate(senders)))
    c.sock.shutdown(socket.SHUT_WR)
    got = [c.read_reply()["action"] for _ in senders]
    assert got == ["REJECT no" if x.startswith("bad") else "DUNNO" for x in senders]
    assert c.closed()


def test_pipelined_flood_while_not_reading(policyd):
    """A client that writes thousands of requests before reading any
    reply gets every reply, in order; the server's memory stays bounded
    (it stops reading while unread replies pile up)."""
    srv = policyd(checks="access", sender_access="inline:{ {bad@example.com = REJECT no} }").start()
    c = srv.client()
    n = 4000
    data = "".join(encode(full_request(sender="bad@example.com" if i % 2 else "ok@example.org",
                                       instance="f%d" % i)) for i in range(n))
    sender = threading.Thread(target=c.send_raw, args=(data,))
    sender.start()
    time.sleep(1.0)
    rss_kb = int(re.search(r"VmRSS:\s+(\d+)", open("/proc/%d/status" % srv.program.pid).read()).group(1))
    got = [c.read_reply()["action"] for _ in range(n)]
    sender.join(30)
    assert got == ["REJECT no" if i % 2 else "DUNNO" for i in range(n)]
    assert rss_kb < 64 * 1024, rss_kb


def test_unknown_attributes_ignored_missing_ones_empty(policyd):
    srv = policyd(checks="access", sender_access="inline:{ {<> = REJECT null sender} }").start()
    c = srv.client()
    assert c.request(future_attribute="x", another_one="y=z") == "DUNNO"
    # A minimal request: everything missing is empty, so the sender is <>.
    c.send_raw("request=smtpd_access_policy\nprotocol_state=RCPT\n\n")
    assert c.read_reply()["action"] == "REJECT null sender"


@pytest.mark.parametrize("payload,why", [
    (b"request=smtpd_access_policy\nno equals sign here\n\n", "missing '='"),
    (b"request=smtpd_access_policy\n=value\n\n", "empty name"),
    (b"request=smtpd_access_policy\nsender=a\0b\n\n", "NUL byte"),
    (b"request=something_else\nprotocol_state=RCPT\n\n", "unrecognized request type"),
    (b"request=smtpd_access_policy\nsender=" + b"x" * 9000 + b"\n\n", "too long"),
])
def test_malformed_request_closes_without_reply(policyd, payload, why):
    srv = policyd(checks="access").start()
    c = srv.client()
    assert c.request() == "DUNNO"          # the connection worked before
    c.send_raw(payload)
    assert c.closed()
    srv.wait_log(r"warning: 127\.0\.0\.1:\d+: .*" + re.escape(why) + r".*; disconnecting")
    # the server goes on serving others
    assert srv.client().request() == "DUNNO"


def test_oversized_request_closes_without_reply(policyd):
    srv = policyd(checks="access", request_size_limit="4096").start()
    c = srv.client()
    attrs = full_request(**{"x_%d" % i: "v" * 100 for i in range(60)})
    c.send_raw(encode(attrs))
    assert c.closed()
    srv.wait_log(r"request longer than request_size_limit")
    assert srv.client().request() == "DUNNO"


def test_client_vanishing_mid_request(policyd):
    srv = policyd(checks="access").start()
    for _ in range(20):
        c = srv.client()
        c.send_raw("request=smtpd_access_policy\nprotocol_state=RC")
        c.close()
    srv.wait_log(r"closed in the middle of a request")
    assert srv.client().request() == "DUNNO"
    assert srv.program.alive


def test_many_concurrent_clients(policyd):
    srv = policyd(checks="access", sender_access="inline:{ {bad@example.com = REJECT no} }").start()
    clients = [srv.client() for _ in range(200)]
    for i, c in enumerate(clients):
        c.send_raw(encode(full_request(sender="bad@example.com" if i % 2 else "x@example.org")))
    for i, c in enumerate(clients):
        assert c.read_reply()["action"] == ("REJECT no" if i % 2 else "DUNNO")
        c.close()


def test_max_clients_and_idle_timeout(policyd):
    srv = policyd(checks="access", max_clients="5", idle_timeout="1s").start()
    # the start-up probe's connection must be gone before counting
    probe = srv.client()
    assert probe.request() == "DUNNO"
    probe.close()
    time.sleep(0.3)
    clients = [srv.client() for _ in range(5)]
    for c in clients:
        assert c.request() == "DUNNO"
    extra = srv.client()
    assert extra.closed()
    srv.wait_log(r"warning: too many clients \(max_clients = 5\)")
    # idle clients are closed after idle_timeout; then there is room again
    assert clients[0].closed(timeout=5)
    srv.wait_log(r"idle timeout, disconnecting")
    harness.wait_for(lambda: srv.client().request() == "DUNNO", timeout=5, what="a free slot")


def test_unix_socket_listener(policyd, tmp_path):
    sock = tmp_path / "policy.sock"
    srv = policyd(checks="access", sender_access="inline:{ {bad@example.com = REJECT no} }")
    srv.set(listen="inet:127.0.0.1:%d unix:%s" % (srv.port, sock))
    srv.start()
    harness.wait_for(sock.exists, what="unix socket")
    c = PolicyClient(str(sock))
    assert c.request(sender="bad@example.com") == "REJECT no"
    assert oct(sock.stat().st_mode & 0o777) == "0o666"


# --- access -----------------------------------------------------------------


def test_access_tables_all_identities(policyd):
    srv = policyd(checks="access")
    srv.set(client_access="cidr:%s" % srv.file("clients.cidr", "198.51.100.0/24 REJECT bad net\n"),
            helo_access="inline:{ {bad.helo.example = 554 5.7.1 bad helo} }",
            sender_access="inline:{ {example.net = DEFER_IF_PERMIT try later} }",
            recipient_access="inline:{ {postmaster@ = OK} }",
            sasl_access="inline:{ {mallory = REJECT account locked} }")
    srv.start()
    c = srv.client()
    assert c.request(client_address="198.51.100.7") == "REJECT bad net"
    assert c.request(helo_name="bad.helo.example") == "554 5.7.1 bad helo"
    # parent domain matches (parent_domain_matches_subdomains, as smtpd_access_maps)
    assert c.request(sender="x@sub.example.net") == "DEFER_IF_PERMIT try later"
    assert c.request(recipient="postmaster@anything.test") == "OK"
    assert c.request(sasl_username="mallory") == "REJECT account locked"
    assert c.request() == "DUNNO"
    srv.wait_log(r"decision: client=mail\.example\.org\[198\.51\.100\.7\], helo=<mail\.example\.org>, "
                 r"from=<alice@example\.org>, to=<bob@example\.test>, state=RCPT, .*checks=access=client, "
                 r"action=REJECT bad net")


def test_access_seed_restricted_recipient_class(policyd):
    """Seed 002: only privileged senders may write to a restricted address."""
    srv = policyd(checks="access")
    rr = srv.file("restricted_recipient", "everyone@example.test restricted_recipient\n")
    ps = srv.file("privileged_sender", "boss@example.test OK\n")
    srv.set(recipient_access="texthash:%s" % rr,
            smtpd_restriction_classes="restricted_recipient",
            restricted_recipient="check_sender_access texthash:%s, reject" % ps)
    srv.start()
    c = srv.client()
    assert c.request(recipient="everyone@example.test", sender="boss@example.test") == "OK"
    assert c.request(recipient="everyone@example.test", sender="joe@example.test") == "REJECT"
    assert c.request(recipient="joe@example.test", sender="joe@example.test") == "DUNNO"


def test_prepend_once_per_message_and_later_recipients_dunno(policyd):
    srv = policyd(checks="access", sender_access="inline:{ {a@example.org = PREPEND X-Tag: one} }").start()
    c = srv.client()
    assert c.request(sender="a@example.org", instance="m1", recipient="r1@example.test") == "PREPEND X-Tag: one"
    # The table says PREPEND for every recipient: the message gets it once.
    assert c.request(sender="a@example.org", instance="m1", recipient="r2@example.test") == "DUNNO"
    assert c.request(sender="a@example.org", instance="m1", protocol_state="DATA") == "DUNNO"
    # the next message on the connection gets its own
    assert c.request(sender="a@example.org", instance="m2") == "PREPEND X-Tag: one"
    # no instance (not from Postfix): no memory at all
    assert c.request(sender="a@example.org", instance="") == "PREPEND X-Tag: one"
    assert c.request(sender="a@example.org", instance="") == "PREPEND X-Tag: one"


def test_reply_is_always_utf8(policyd):
    """Postfix treats a reply that is not UTF-8 as a failed request."""
    srv = policyd(checks="access")
    table = srv.dir / "senders"
    table.write_bytes(b"latin1@example.org REJECT caf\xe9 closed\n"
                      b"utf8@example.org REJECT caf\xc3\xa9 open\n")
    srv.set(sender_access="texthash:%s" % table)
    srv.start()
    c = srv.client()
    assert c.request(sender="latin1@example.org") == "REJECT caf? closed"
    assert c.request(sender="utf8@example.org") == "REJECT caf\u00e9 open"
    srv.wait_log(r"warning: .*action is not valid UTF-8")


def test_lookup_failure_is_temporary(policyd):
    port = harness.free_port()          # no socketmap server there
    srv = policyd(checks="access", sender_access="socketmap:inet:127.0.0.1:%d:senders" % port).start()
    assert srv.client().request() == "451 4.3.0 Temporary lookup failure"
    srv.wait_log(r"warning: socketmap:.* lookup error for sender")


def test_missing_table_refuses_start(policyd, tmp_path):
    srv = policyd(checks="access", sender_access="cdb:%s" % (tmp_path / "missing"))
    proc = subprocess.run(srv.argv("-n"), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "missing" in proc.stderr


def test_bad_config_refused_with_file_and_line(policyd):
    srv = policyd(checks="access, nosuchcheck")
    proc = subprocess.run(srv.argv("-n"), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert 'unknown check "nosuchcheck"' in proc.stderr
    srv.set(checks="access", greylist_delay="soon")
    proc = subprocess.run(srv.argv("-n"), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "line" in proc.stderr and "greylist_delay" in proc.stderr


# --- greylisting -------------------------------------------------------------


def grey_req(c, t, **kw):
    kw.setdefault("instance", "g%d" % t)
    return c.request(policy_test_time=t, **kw)


def test_greylist_postgrey_flow(policyd):
    srv = policyd(checks="greylist", greylist_delay="300s", test_time_attribute="yes").start()
    c = srv.client()
    t0 = 2_000_000_000
    assert grey_req(c, t0) == GREY
    assert grey_req(c, t0 + 100) == GREY                 # retry too early
    # same /24, normalised sender (extension and digits): the same triplet
    a = grey_req(c, t0 + 301, client_address="192.0.2.99", sender="ALICE+list@example.org",
                 instance="m1")
    assert a.startswith("PREPEND X-Greylist: delayed 301 seconds by tern-policyd at policy.test; ")
    # second recipient of that message: no second header
    assert grey_req(c, t0 + 302, recipient="carol@example.test", instance="m1") == GREY
    assert grey_req(c, t0 + 303, instance="m1", protocol_state="DATA", recipient="") == "DUNNO"
    # a later message for the known triplet passes without a header
    assert grey_req(c, t0 + 400, instance="m2") == "DUNNO"
    # another /24 is a new triplet
    assert grey_req(c, t0 + 400, client_address="192.0.3.10", instance="m3") == GREY
    # the retry window: a first retry after 2 days starts over
    assert grey_req(c, t0, sender="x@example.net", instance="m4") == GREY
    assert grey_req(c, t0 + 3 * 86400, sender="x@example.net", instance="m5") == GREY
    srv.wait_log(r"checks=greylist=early")


def test_greylist_policy_test_time_needs_permission(policyd):
    srv = policyd(checks="greylist", greylist_delay="300s").start()
    c = srv.client()
    assert grey_req(c, 1) == GREY
    assert grey_req(c, 2_000_000_000) == GREY     # ignored: the real clock rules


def test_greylist_auto_whitelist_and_files(policyd):
    srv = policyd(checks="greylist", greylist_delay="60s", test_time_attribute="yes",
                  greylist_auto_whitelist_clients="2")
    wc = srv.file("whitelist_clients", "# postgrey syntax\nmx.friendly.example\n198.51.100\n"
                  "203.0.113.0/28\n/^mail\\d+\\.regex\\.example$/\n")
    wr = srv.file("whitelist_recipients", "postmaster@\nopen.example\n")
    srv.set(greylist_whitelist_clients=wc, greylist_whitelist_recipients=wr)
    srv.start()
    c = srv.client()
    t = 2_000_000_000
    assert grey_req(c, t, client_name="a.mx.friendly.example", client_address="192.0.9.1") == "DUNNO"
    assert grey_req(c, t, client_address="198.51.100.200") == "DUNNO"
    assert grey_req(c, t, client_address="198.51.1.200") == GREY
    assert grey_req(c, t, client_address="203.0.113.9") == "DUNNO"
    assert grey_req(c, t, client_address="203.0.113.99") == GREY
    assert grey_req(c, t, client_name="mail7.regex.example", client_address="192.0.8.1") == "DUNNO"
    assert grey_req(c, t, recipient="postmaster@example.test", client_address="192.0.7.1") == "DUNNO"
    assert grey_req(c, t, recipient="x@sub.open.example", client_address="192.0.7.1") == "DUNNO"
    # digit runs are normalised (VERP): s1@ and s2@ are one sender
    assert grey_req(c, t, client_address="192.0.5.1", sender="s1@example.org") == GREY
    assert grey_req(c, t + 61, client_address="192.0.5.1", sender="s2@example.org").startswith("PREPEND")
    # auto-whitelist: two passes, at least an hour apart, whitelist the /24
    ip = "192.0.2.50"
    assert grey_req(c, t, client_address=ip, sender="one@example.org") == GREY
    assert grey_req(c, t + 61, client_address=ip, sender="one@example.org").startswith("PREPEND X-Greylist")
    assert grey_req(c, t + 7200, client_address=ip, sender="two@example.org") == GREY
    assert grey_req(c, t + 7261, client_address=ip, sender="two@example.org").startswith("PREPEND")
    assert grey_req(c, t + 7300, client_address=ip, sender="new@example.org") == "DUNNO"
    srv.wait_log(r"greylist=auto-whitelisted")


def test_greylist_state_survives_restart(policyd):
    srv = policyd(checks="greylist", greylist_delay="60s", test_time_attribute="yes").start()
    t = 2_000_000_000
    assert grey_req(srv.client(), t) == GREY
    srv.stop()
    srv.start()
    assert grey_req(srv.client(), t + 61).startswith("PREPEND X-Greylist: delayed 61 seconds")


@pytest.fixture
def redis_server(start_program, tmp_path):
    port = harness.free_port()
    (tmp_path / "redis").mkdir()
    start_program(["/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1",
                   "--save", "", "--appendonly", "no", "--dir", str(tmp_path / "redis")],
                  ready=port, name="redis-server")
    return "redis://127.0.0.1:%d/2" % port


def test_greylist_redis_shared_by_two_servers(policyd, redis_server):
    conf = dict(checks="greylist", greylist_delay="60s", test_time_attribute="yes",
                state=redis_server)
    a, b = policyd("a", **conf).start(), policyd("b", **conf).start()
    t = 2_000_000_000
    assert grey_req(a.client(), t) == GREY
    assert grey_req(b.client(), t + 30) == GREY                       # seen by a
    assert grey_req(b.client(), t + 61).startswith("PREPEND X-Greylist: delayed 61 seconds")
    assert grey_req(a.client(), t + 62, instance="later") == "DUNNO"  # passed on b


def test_reload_shares_the_lmdb_store(policyd):
    """A reload with the same state keeps using the one open LMDB
    environment (LMDB forbids opening it twice in a process)."""
    srv = policyd(checks="greylist", greylist_delay="60s", test_time_attribute="yes").start()
    c = srv.client()
    t = 2_000_000_000
    assert grey_req(c, t) == GREY
    for i in range(3):
        srv.set(greylist_text="Greylisted %d, see %%r" % i)
        srv.program.signal(signal.SIGHUP)
        srv.wait_log(r"(?s)(reload -- configuration.*){%d}" % (i + 1))
        # old configurations are freed once no request uses them
        assert grey_req(c, t + 10 + i, instance="r%d" % i) == (
            "DEFER_IF_PERMIT 4.2.0 Greylisted %d, see example.test" % i)
    assert grey_req(c, t + 61).startswith("PREPEND X-Greylist: delayed 61 seconds")
    srv.stop()
    srv.start()
    assert grey_req(srv.client(), t + 62, instance="after") == "DUNNO"


def test_lmdb_map_full_does_not_stop_mail(policyd):
    srv = policyd(checks="greylist", greylist_delay="60s", state_map_size="64k").start()
    c = srv.client()
    answers = [c.request(recipient="r%d-%s@example.test" % (i, "x" * 200), instance="i%d" % i)
               for i in range(400)]
    assert answers[0] == GREY
    assert answers[-1] == "DUNNO"                      # state_error_action
    srv.wait_log(r"warning: greylist: state lmdb:.*MDB_MAP_FULL.*state_error_action")
    assert srv.program.alive


def test_redis_back_after_an_outage(policyd, start_program, tmp_path):
    port = harness.free_port()
    srv = policyd(checks="greylist", greylist_delay="60s", test_time_attribute="yes",
                  state="redis://127.0.0.1:%d/0" % port).start()
    c = srv.client()
    t = 2_000_000_000
    assert grey_req(c, t) == "DUNNO"                   # Redis down: state_error_action
    (tmp_path / "redis").mkdir()
    start_program(["/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1",
                   "--save", "", "--appendonly", "no", "--dir", str(tmp_path / "redis")],
                  ready=port, name="redis-server")
    assert grey_req(c, t + 1, instance="again") == GREY  # reconnected, no reload needed


def test_state_store_down_gives_configured_action(policyd):
    port = harness.free_port()          # nothing listens there
    srv = policyd(checks="greylist, ratelimit", state="redis://127.0.0.1:%d/0" % port,
                  ratelimit_rules="sender:messages:1/1h").start()
    c = srv.client()
    assert c.request() == "DUNNO"
    srv.wait_log(r"warning: greylist: state redis://127\.0\.0\.1:%d/0: .*state_error_action" % port)
    srv.set(state_error_action="451 4.3.0 state store unavailable")
    srv.program.signal(signal.SIGHUP)
    srv.wait_log(r"reload -- configuration")
    assert c.request(instance="other") == "451 4.3.0 state store unavailable"


# --- rate limits --------------------------------------------------------------


def eom(c, sender, n, **kw):
    return c.request(protocol_state="END-OF-MESSAGE", sender=sender, recipient="",
                     recipient_count=n, instance="eom-%s-%f" % (sender, time.monotonic()), **kw)


def test_ratelimit_messages_recipients_bytes_lmdb_restart(policyd):
    srv = policyd(checks="ratelimit",
                  ratelimit_rules="sender:messages:3/1h, sasl_username:recipients:5/1h, "
                                  "client_net:bytes:10k/1h").start()
    over = "DEFER_IF_PERMIT 4.7.1 Rate limit exceeded, try again later"
    c = srv.client()
    # messages: counted once per message at END-OF-MESSAGE, not per RCPT
    for _ in range(5):
        assert c.request(sender="m@example.org", instance="same") == "DUNNO"
    assert [eom(c, "m@example.org", 1) for _ in range(4)] == ["DUNNO"] * 3 + [over]
    # now the sender is at its limit: refused early at RCPT too
    assert c.request(sender="m@example.org", instance="late") == over
    srv.stop()
    srv.start()                                   # LMDB: the window survives
    c = srv.client()
    assert eom(c, "m@example.org", 1) == over
    # recipients per SASL user (empty login: not counted)
    assert eom(c, "r1@example.org", 4, sasl_username="sam") == "DUNNO"
    assert eom(c, "r2@example.org", 2, sasl_username="sam") == over
    assert eom(c, "r3@example.org", 1, sasl_username="sam") == "DUNNO"
    assert eom(c, "r4@example.org", 9, sasl_username="") == "DUNNO"
    # bytes per client /24
    assert eom(c, "b1@example.org", 1, size=6000, client_address="198.51.100.1") == "DUNNO"
    assert eom(c, "b2@example.org", 1, size=6000, client_address="198.51.100.2") == over
    srv.wait_log(r"rate limit client_net:bytes:10k/1h exceeded for 198\.51\.100\.0/24")


def test_ratelimit_shared_redis_two_servers(policyd, redis_server):
    rules = dict(checks="ratelimit", state=redis_server,
                 ratelimit_rules="sasl_username:messages:10/1h")
    a = policyd("a", **rules).start()
    b = policyd("b", **rules).start()
    over = "DEFER_IF_PERMIT 4.7.1 Rate limit exceeded, try again later"
    ca, cb = a.client(), b.client()
    results = []
    for i in range(8):
        results.append(eom(ca, "x%d@example.org" % i, 1, sasl_username="shared"))
        results.append(eom(cb, "y%d@example.org" % i, 1, sasl_username="shared"))
    assert results.count("DUNNO") == 10 and results.count(over) == 6
    assert results[:10] == ["DUNNO"] * 10


def test_check_groups_with_their_own_settings(policyd):
    """A check may appear several times, each with its own settings, written
    as Postfix's per-service overrides: { check, name=value, { name = value } }."""
    srv = policyd(checks="{ access, sender_access=inline:{{a@example.org=REJECT first}} }, "
                         "ratelimit, "
                         "{ ratelimit, ratelimit_rules=sasl_username:messages:2/1h, "
                         "{ ratelimit_action = 550 5.7.1 two per hour for you } }, "
                         "{ access, { sender_access = inline:{ {b@example.org = REJECT second} } } }",
                  ratelimit_rules="sender:messages:3/1h")
    srv.start()
    c = srv.client()
    assert c.request(sender="a@example.org") == "REJECT first"
    assert c.request(sender="b@example.org") == "REJECT second"
    # the first ratelimit (3 per sender) and the second (2 per login) each
    # count every message; the third one passed the first before the
    # second refused it (docs/policyd.md: counted by the earlier checks)
    assert eom(c, "s@example.org", 1, sasl_username="u1") == "DUNNO"
    assert eom(c, "s@example.org", 1, sasl_username="u1") == "DUNNO"
    assert eom(c, "s@example.org", 1, sasl_username="u1") == "550 5.7.1 two per hour for you"
    assert eom(c, "s@example.org", 1, sasl_username="u2") == (
        "DEFER_IF_PERMIT 4.7.1 Rate limit exceeded, try again later")
    assert eom(c, "t@example.org", 1, sasl_username="u2") == "DUNNO"
    # server settings cannot be changed per check
    srv.set(checks="{ access, state=lmdb:/tmp/elsewhere }")
    proc = subprocess.run(srv.argv("-n"), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "state is a server setting" in proc.stderr
    srv.set(checks="{ access, sender_access = inline:{ {x=y} } }")
    proc = subprocess.run(srv.argv("-n"), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "is not name = value" in proc.stderr


# --- BCC ----------------------------------------------------------------------


def test_bcc_seed_archive_when_sender_or_recipient_remote(policyd):
    srv = policyd(checks="bcc")
    rules = srv.file("archive-check", "!/@example\\.com$/ archive@example.com\n")
    srv.set(bcc_sender_maps="pcre:%s" % rules, bcc_recipient_maps="pcre:%s" % rules)
    srv.start()
    c = srv.client()
    # local -> local: no copy
    assert c.request(sender="a@example.com", recipient="b@example.com", instance="1") == "DUNNO"
    # remote sender
    assert c.request(sender="a@example.org", recipient="b@example.com", instance="2") == "BCC archive@example.com"
    # local sender, remote recipient
    assert c.request(sender="a@example.com", recipient="b@example.org", instance="3") == "BCC archive@example.com"
    # one BCC per message
    assert c.request(sender="a@example.com", recipient="c@example.org", instance="3") == "DUNNO"


# --- reload and daemon ----------------------------------------------------------


def test_reload_rereads_config_and_keeps_it_when_invalid(policyd):
    srv = policyd(checks="access", sender_access="inline:{ {a@example.org = REJECT one} }").start()
    c = srv.client()
    assert c.request(sender="a@example.org") == "REJECT one"
    srv.set(sender_access="inline:{ {a@example.org = REJECT two} }")
    proc = subprocess.run(srv.argv("reload"), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    srv.wait_log(r"reload -- configuration")
    assert c.request(sender="a@example.org") == "REJECT two"     # same connection
    srv.set(checks="access, bogus")
    srv.program.signal(signal.SIGHUP)
    srv.wait_log(r"reload refused, keeping the running configuration: .*bogus")
    assert c.request(sender="a@example.org") == "REJECT two"


def test_daemon_mode_pid_file_and_stop(policyd):
    srv = policyd(checks="access")
    srv.set(maillog_file=str(srv.dir / "maillog"))
    proc = subprocess.run(srv.argv(), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    pid = int(srv.pid_file.read_text())
    try:
        assert harness.port_accepts(srv.port)
        assert srv.client().request() == "DUNNO"
        # the decision line is written at the end of the loop's turn,
        # which may come a moment after the reply
        decision = "tern/policyd[%d]: decision: client=mail.example.org[192.0.2.10]" % pid
        harness.wait_for(lambda: decision in (srv.dir / "maillog").read_text(), timeout=10)
        assert "tern/policyd[%d]: daemon started" % pid in (srv.dir / "maillog").read_text()
        if os.getuid() == 0:      # privileges dropped to "user" (tern)
            st = os.stat("/proc/%d" % pid)
            assert st.st_uid != 0
        proc = subprocess.run(srv.argv("stop"), capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0
        harness.wait_for(lambda: not os.path.exists("/proc/%d" % pid) or
                         open("/proc/%d/stat" % pid).read().split(")")[1].split()[0] == "Z",
                         what="tern-policyd to exit")
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_daemon_start_failure_reported(policyd):
    srv = policyd(checks="access")
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", srv.port))
    blocker.listen(1)
    try:
        proc = subprocess.run(srv.argv(), capture_output=True, text=True, timeout=30)
    finally:
        blocker.close()
    assert proc.returncode == 1 and "Address already in use" in proc.stderr


def test_sample_config_is_valid(policyd, tmp_path):
    """conf/policyd.conf, with its paths moved into the test directory."""
    text = (harness.REPO / "conf" / "policyd.conf").read_text()
    text = text.replace("/var/lib/tern/policyd", str(tmp_path / "state"))
    text = text.replace("/run/tern/policyd.pid", str(tmp_path / "pid"))
    conf = tmp_path / "policyd.conf"
    conf.write_text(text)
    proc = subprocess.run([harness.tern_bin("tern-policyd"), "-n", "-c", conf],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
