"""tern-policyd with several event loops (event_loops): connections are
dealt out to the loops, so requests run at the same time on different
threads. What must stay true: every client gets its own answers in
order, a rate limit is never passed (LMDB check-and-add is atomic),
greylist triplets come out the same as with one loop, and a reload
reaches every loop.
"""

import os
import signal
import threading
import time

import pytest

from policyd_helpers import PolicyServer

GREY = "DEFER_IF_PERMIT 4.2.0 Greylisted, see http://postgrey.schweikert.ch/help/example.test.html"
OVER = "DEFER_IF_PERMIT 4.7.1 Rate limit exceeded, try again later"


@pytest.fixture
def policyd(start_program, tmp_path):
    def make(name="pd", **settings):
        return PolicyServer(start_program, tmp_path / name, **settings)

    return make


def run_clients(srv, n, work):
    """work(client, n) in n threads, each on its own connection; returns
    the exceptions raised."""
    errors = []

    def one(i):
        try:
            c = srv.client()
            work(c, i)
            c.close()
        except Exception as e:      # noqa: BLE001 - reported by the caller
            errors.append(repr(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


def test_loops_started_and_answers_stay_per_client(policyd):
    """Four loops, 24 clients: each gets the answer to its own requests,
    in order (a sender_access result names the client's request)."""
    srv = policyd(checks="access", event_loops="4")
    table = srv.file("senders", "".join("c%d-r%d@example.org REJECT c%d r%d\n" % (i, j, i, j)
                                        for i in range(24) for j in range(30)))
    srv.set(sender_access="texthash:%s" % table)
    srv.start()
    srv.wait_log(r"daemon started -- listening on \S+, 4 event loop\(s\)")

    def work(c, i):
        for j in range(30):
            got = c.request(sender="c%d-r%d@example.org" % (i, j), instance="c%d-%d" % (i, j))
            assert got == "REJECT c%d r%d" % (i, j), got

    assert run_clients(srv, 24, work) == []


def test_loops_default_is_one_per_cpu(policyd):
    srv = policyd(checks="access").start()
    srv.wait_log(r"daemon started -- listening on \S+, %d event loop\(s\)"
                 % len(os.sched_getaffinity(0)))


def test_loops_rate_limit_is_atomic(policyd):
    """16 clients on 4 loops race for one sender's 50 messages an hour:
    exactly 50 are let through, whatever the interleaving."""
    srv = policyd(checks="ratelimit", event_loops="4",
                  ratelimit_rules="sender:messages:50/1h").start()
    results = []
    lock = threading.Lock()

    def work(c, i):
        for j in range(10):
            got = c.request(protocol_state="END-OF-MESSAGE", sender="race@example.org",
                            recipient="", recipient_count=1, instance="m%d-%d" % (i, j))
            with lock:
                results.append(got)

    assert run_clients(srv, 16, work) == []
    assert len(results) == 160
    assert results.count("DUNNO") == 50
    assert results.count(OVER) == 110


def test_loops_greylist_triplets(policyd):
    """Many clients on several loops see one new triplet at once: all are
    deferred, the delay counts from its first sight, and all pass after
    the delay (the X-Greylist header goes to the first message that
    passes; one that passes at the same instant on another loop may get
    it too, and that one was delayed as well)."""
    srv = policyd(checks="greylist", event_loops="4", greylist_delay="60s",
                  test_time_attribute="yes").start()
    t = 2_000_000_000

    def first(c, i):
        assert c.request(policy_test_time=t, instance="a%d" % i) == GREY

    def early(c, i):
        assert c.request(policy_test_time=t + 30, instance="b%d" % i) == GREY

    passed = []

    def later(c, i):
        passed.append(c.request(policy_test_time=t + 61, instance="c%d" % i))

    for step in (first, early, later):
        assert run_clients(srv, 12, step) == []
    header = "PREPEND X-Greylist: delayed 61 seconds by tern-policyd at policy.test; "
    assert len(passed) == 12
    assert all(p == "DUNNO" or p.startswith(header) for p in passed), passed
    assert any(p.startswith(header) for p in passed), passed
    c = srv.client()
    assert c.request(policy_test_time=t + 62, instance="d") == "DUNNO"


def test_loops_reload_reaches_every_loop(policyd):
    """Connections on every loop, opened before a reload, use the new
    configuration for their next request; the old one is let go."""
    srv = policyd(checks="access", event_loops="3",
                  sender_access="inline:{ {x@example.org = REJECT old} }").start()
    clients = [srv.client() for _ in range(6)]
    for i, c in enumerate(clients):
        assert c.request(sender="x@example.org", instance="o%d" % i) == "REJECT old"
    srv.set(sender_access="inline:{ {x@example.org = REJECT new} }")
    srv.program.signal(signal.SIGHUP)
    srv.wait_log(r"reload -- configuration")
    for i, c in enumerate(clients):
        assert c.request(sender="x@example.org", instance="n%d" % i) == "REJECT new"


def test_loops_client_closing_while_answered(policyd):
    """Clients that send and hang up at once, on every loop: the server
    keeps serving the others and stops cleanly (checked at teardown)."""
    srv = policyd(checks="access, greylist", event_loops="2").start()
    for i in range(40):
        c = srv.client()
        c.send_raw("request=smtpd_access_policy\nprotocol_state=RCPT\nsender=a%d@x.org\n"
                   "recipient=b@example.test\nclient_address=192.0.2.%d\n\n" % (i, i + 1))
        c.close()
    c = srv.client()
    assert c.request(sender="z@example.org", instance="z") == GREY
    time.sleep(0.2)
