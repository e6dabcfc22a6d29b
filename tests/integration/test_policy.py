"""test_policy.py - ternd as a client of policy services (Postfix's SMTP
access policy delegation protocol): every attribute at every stage, in
Postfix's order (checked against a real Postfix 3.7 talking to the same
recording server), actions in replies, per-service settings, connection
reuse, and the failure modes: server down, hanging, garbage, a reply cut
in the middle; a slow service never holds up other sessions."""

import time

import pytest

import harness
from pfinstance import PostfixInstance
from restr_util import PolicyServer, Smtp, mailbox, session, start_ternd, wait_log

# Postfix 3.7's attributes, in its order (3.8 adds compatibility_level and
# mail_version, 3.12 tls_sni, which Tern sends too).
EXTRA = ["compatibility_level", "mail_version", "tls_sni"]


@pytest.fixture
def policy():
    servers = []

    def make(answer=lambda req: "DUNNO", mode="normal"):
        p = PolicyServer(answer, mode)
        servers.append(p)
        return p

    yield make
    for p in servers:
        p.stop()


def names(req):
    return [k for k, _ in req]


def test_attributes_in_postfix_order(tmp_path, policy, config_dir, start_program):
    """The same session through Postfix 3.7 and ternd: the same attribute
    names in the same order (Tern adds the two 3.8 ones at the end)."""
    pol = policy()
    pf = PostfixInstance(tmp_path / "pf", harness.free_port(),
                         mailboxes={"joe@example.test": "example.test/joe/"},
                         main={"smtpd_authorized_xclient_hosts": "127.0.0.0/8",
                               "smtpd_recipient_restrictions":
                                   "check_policy_service %s, reject_unauth_destination"
                                   % pol.endpoint})
    pf.start()
    try:
        s = session(pf.port)
        s.cmd("MAIL FROM:<a@example.org> SIZE=100")
        assert s.cmd("RCPT TO:<joe@example.test>").startswith("250")
        s.close()
    finally:
        pf.stop()
    want = names(pol.requests[-1])
    port = start_ternd(config_dir, start_program,
                       smtpd_recipient_restrictions="check_policy_service %s" % pol.endpoint)
    s = session(port)
    s.cmd("MAIL FROM:<a@example.org> SIZE=100")
    assert s.cmd("RCPT TO:<joe@example.test>").startswith("250")
    s.close()
    got = names(pol.requests[-1])
    assert got == want + EXTRA, "postfix: %s\nternd:   %s" % (want, got)


def test_every_stage_and_value(policy, config_dir, start_program):
    pol = policy()
    lists = {p: "check_policy_service { %s, policy_context=ctx1 }" % pol.endpoint
             for p in ("smtpd_client_restrictions", "smtpd_helo_restrictions",
                       "smtpd_sender_restrictions", "smtpd_recipient_restrictions",
                       "smtpd_data_restrictions", "smtpd_end_of_data_restrictions")}
    port = start_ternd(config_dir, start_program, smtpd_delay_reject="no", **lists)
    time.sleep(0.3)  # the start-up probe's connection was checked too
    first = len(pol.requests)
    s = Smtp(port)
    s.cmd("EHLO probe.example")
    assert s.cmd("XCLIENT NAME=c.example.net REVERSE_NAME=r.example.net ADDR=192.0.2.7 "
                 "PORT=4242").startswith("220")
    assert s.cmd("EHLO helo.example.net").startswith("250")
    assert s.cmd("MAIL FROM:<Sender@Example.ORG> SIZE=321") == "250 2.1.0 Ok"
    assert s.cmd("RCPT TO:<joe@example.test>") == "250 2.1.5 Ok"
    assert s.cmd("RCPT TO:<alice@example.test>") == "250 2.1.5 Ok"
    reply = s.message()
    assert reply.startswith("250 2.0.0 Ok: queued as ")
    qid = reply.split()[-1]
    s.close()
    reqs = [dict(r) for r in pol.requests[first:]]
    states = [r["protocol_state"] for r in reqs]
    assert states == ["CONNECT", "EHLO", "CONNECT", "EHLO", "MAIL", "RCPT", "RCPT", "DATA",
                      "END-OF-MESSAGE"]
    for r in pol.requests[first:]:
        assert names(r)[0] == "request" and dict(r)["request"] == "smtpd_access_policy"
        assert len(names(r)) == len(set(names(r))) == 32
    by = {r["protocol_state"]: r for r in reqs}
    rcpt1, rcpt2 = reqs[5], reqs[6]
    assert by["EHLO"]["helo_name"] == "helo.example.net"
    assert by["MAIL"]["sender"] == "Sender@Example.ORG" and by["MAIL"]["size"] == "321"
    assert rcpt1["client_address"] == "192.0.2.7" and rcpt1["client_name"] == "c.example.net"
    assert rcpt1["reverse_client_name"] == "r.example.net" and rcpt1["client_port"] == "4242"
    assert rcpt1["protocol_name"] == "ESMTP" and rcpt1["policy_context"] == "ctx1"
    assert rcpt1["recipient"] == "joe@example.test" and rcpt1["recipient_count"] == "0"
    assert rcpt1["queue_id"] == "" and rcpt2["queue_id"] == qid
    assert rcpt1["instance"] and rcpt1["instance"] == rcpt2["instance"] == by["DATA"]["instance"]
    assert rcpt1["server_address"] == "127.0.0.1"
    assert rcpt1["server_port"] == str(config_dir.smtp_port)
    assert rcpt1["compatibility_level"] and rcpt1["mail_version"]
    assert rcpt1["encryption_keysize"] == "0" and rcpt1["sasl_username"] == ""
    # two recipients: DATA and END-OF-MESSAGE name none, but count them
    assert by["DATA"]["recipient"] == "" and by["DATA"]["recipient_count"] == "2"
    assert by["END-OF-MESSAGE"]["recipient_count"] == "2"
    # "Subject: test", "", "hello": 21 octets with CRLF line ends (act_size)
    assert by["END-OF-MESSAGE"]["size"] == "24"


def test_actions(policy, config_dir, start_program):
    table = {"rej@example.test": "REJECT not you", "num@example.test": "450",
             "dip@example.test": "DEFER_IF_PERMIT 4.7.5 later", "code@example.test": "551 5.7.0 no",
             "restr@example.test": "reject_unauth_destination", "joe@example.test": "DUNNO",
             "bad@example.test": "reject_no_such_thing", "x@elsewhere.test": "OK"}
    pol = policy(lambda r: table.get(r.get("recipient"), "DUNNO"))
    port = start_ternd(config_dir, start_program,
                       smtpd_recipient_restrictions="check_policy_service %s" % pol.endpoint,
                       smtpd_relay_restrictions="check_policy_service %s, reject_unauth_destination"
                                                % pol.endpoint)
    s = session(port)
    s.cmd("MAIL FROM:<a@example.org>")
    assert s.cmd("RCPT TO:<rej@example.test>") == \
        "554 5.7.1 <rej@example.test>: Recipient address rejected: not you"
    # Postfix's quirk: an all-numeric action is OK (then: unknown user)
    assert s.cmd("RCPT TO:<num@example.test>").startswith("550 5.1.1 <num@example.test>")
    assert s.cmd("RCPT TO:<dip@example.test>") == \
        "450 4.7.5 <dip@example.test>: Recipient address rejected: later"
    assert s.cmd("RCPT TO:<code@example.test>") == \
        "551 5.7.0 <code@example.test>: Recipient address rejected: no"
    assert s.cmd("RCPT TO:<bad@example.test>") == "451 4.3.5 Server configuration error"
    assert s.cmd("RCPT TO:<joe@example.test>") == "250 2.1.5 Ok"
    # OK in the relay restrictions ends only that list
    assert s.cmd("RCPT TO:<x@elsewhere.test>") == "250 2.1.5 Ok"
    s.close()
    wait_log(config_dir, r"NOQUEUE: reject: RCPT from client\.example\.net\[192\.0\.2\.10\]: "
                         r"554 5\.7\.1 <rej@example\.test>: Recipient address rejected: not you; "
                         r"from=<a@example\.org> to=<rej@example\.test> proto=ESMTP "
                         r"helo=<client\.example\.net>")


def test_prepend_and_hold(policy, config_dir, start_program):
    pol = policy(lambda r: "PREPEND X-Policy: checked" if r["protocol_state"] == "RCPT"
                 else "HOLD policy says hold" if r["sender"] == "hold@example.org" else "DUNNO")
    port = start_ternd(config_dir, start_program,
                       smtpd_recipient_restrictions="check_policy_service %s" % pol.endpoint,
                       smtpd_data_restrictions="check_policy_service %s" % pol.endpoint)
    s = session(port)
    s.cmd("MAIL FROM:<a@example.org>")
    s.cmd("RCPT TO:<joe@example.test>")
    assert s.message().startswith("250 2.0.0 Ok: queued as")
    s.cmd("MAIL FROM:<hold@example.org>")
    s.cmd("RCPT TO:<alice@example.test>")
    held = s.message().split()[-1]
    s.close()
    msg = mailbox(config_dir, "joe")[0]
    head = msg.split(b"\n\n")[0]
    assert b"\nX-Policy: checked\nReceived: " in head, msg
    rc, out, err = harness.run_tern("queue", "list", config_dir=config_dir)
    assert held in out and "!" in out.split(held)[0][-3:] + out.split(held)[1][:3] or \
        "hold" in out.lower(), out
    assert mailbox(config_dir, "alice", timeout=1.5) == []
    wait_log(config_dir, r"hold: DATA from .*<DATA>: Data command policy says hold")


def test_server_down_gives_default_action(config_dir, start_program):
    dead = "inet:127.0.0.1:%d" % harness.free_port()
    port = start_ternd(config_dir, start_program, smtpd_policy_service_retry_delay="0",
                       smtpd_recipient_restrictions="check_policy_service %s, "
                       "check_policy_service { %s, default_action=DUNNO }" % (dead, dead))
    s = session(port)
    s.cmd("MAIL FROM:<a@example.org>")
    assert s.cmd("RCPT TO:<joe@example.test>") == \
        "451 4.3.5 <joe@example.test>: Recipient address rejected: Server configuration problem"
    s.close()
    wait_log(config_dir, r"warning: problem talking to server %s" % dead.replace(".", r"\."))
    config_dir.program.stop()
    port = start_ternd(config_dir, start_program, smtpd_policy_service_retry_delay="0",
                       smtpd_recipient_restrictions="check_policy_service "
                       "{ %s, default_action=DUNNO }" % dead)
    s = session(port)
    s.cmd("MAIL FROM:<a@example.org>")
    assert s.cmd("RCPT TO:<joe@example.test>") == "250 2.1.5 Ok"
    s.close()


@pytest.mark.parametrize("mode", ["garbage", "cut"])
def test_bad_replies_give_default_action(policy, config_dir, start_program, mode):
    pol = policy(mode=mode)
    port = start_ternd(config_dir, start_program, smtpd_policy_service_retry_delay="0",
                       smtpd_recipient_restrictions="check_policy_service "
                       "{ %s, { default_action = 450 4.7.9 policy trouble } }" % pol.endpoint)
    s = session(port)
    s.cmd("MAIL FROM:<a@example.org>")
    assert s.cmd("RCPT TO:<joe@example.test>") == \
        "450 4.7.9 <joe@example.test>: Recipient address rejected: policy trouble"
    s.close()
    assert len(pol.requests) == 2  # try_limit = 2: both tries reached the server


def test_hanging_server_times_out_without_blocking_others(policy, config_dir, start_program):
    slow = policy(mode="hang")
    fast = policy(lambda r: "DUNNO")
    port = start_ternd(config_dir, start_program,
                       smtpd_recipient_restrictions="check_recipient_access "
                       "inline:{slow@example.test=slowpolicy}, check_policy_service %s"
                       % fast.endpoint,
                       smtpd_restriction_classes="slowpolicy",
                       slowpolicy="check_policy_service { %s, timeout=3s, try_limit=1 }"
                                  % slow.endpoint)
    hung = session(port)
    hung.cmd("MAIL FROM:<a@example.org>")
    t0 = time.monotonic()
    hung.sock.sendall(b"RCPT TO:<slow@example.test>\r\n")
    time.sleep(0.3)
    # other sessions on every loop go on meanwhile
    for i in range(6):
        s = session(port)
        s.cmd("MAIL FROM:<a@example.org>")
        t1 = time.monotonic()
        assert s.cmd("RCPT TO:<joe@example.test>") == "250 2.1.5 Ok"
        assert time.monotonic() - t1 < 1.0
        s.close()
    assert hung.reply() == \
        "451 4.3.5 <slow@example.test>: Recipient address rejected: Server configuration problem"
    assert 2.5 < time.monotonic() - t0 < 6
    hung.close()


def test_connections_are_reused_and_dead_ones_replaced(policy, config_dir, start_program):
    pol = policy()
    port = start_ternd(config_dir, start_program,
                       smtpd_recipient_restrictions="check_policy_service %s" % pol.endpoint)
    for i in range(8):
        s = session(port)
        s.cmd("MAIL FROM:<a@example.org>")
        assert s.cmd("RCPT TO:<joe@example.test>") == "250 2.1.5 Ok"
        assert s.cmd("RCPT TO:<alice@example.test>") == "250 2.1.5 Ok"
        s.close()
    assert len(pol.requests) == 16
    assert pol.connections < 16  # at most one per event loop in use
    # a server that hangs up after every answer: never a failed request
    closer = policy(mode="close")
    config_dir.program.stop()
    port = start_ternd(config_dir, start_program,
                       smtpd_recipient_restrictions="check_policy_service { %s, "
                       "{ default_action = REJECT fell back } }" % closer.endpoint)
    for i in range(4):
        s = session(port)
        s.cmd("MAIL FROM:<a@example.org>")
        assert s.cmd("RCPT TO:<joe@example.test>") == "250 2.1.5 Ok"
        s.close()
        time.sleep(0.1)
    assert len(closer.requests) == 4


def test_request_limit(policy, config_dir, start_program):
    pol = policy()
    port = start_ternd(config_dir, start_program,
                       smtpd_recipient_restrictions="check_policy_service { %s, request_limit=1 }"
                       % pol.endpoint)
    s = session(port)
    s.cmd("MAIL FROM:<a@example.org>")
    for r in ("joe", "alice", "archive"):
        assert s.cmd("RCPT TO:<%s@example.test>" % r) == "250 2.1.5 Ok"
    s.close()
    assert pol.connections == 3


def test_bad_policy_settings_refused(config_dir):
    config_dir.set(smtpd_recipient_restrictions="check_policy_service { inet:127.0.0.1:1, "
                   "timeout=soon }, reject_unauth_destination")
    rc, out, err = harness.run_tern("check", config_dir=config_dir)
    assert rc != 0 and "tern.conf, line" in err and "bad timeout value" in err, err


def test_many_sessions_in_parallel(policy, config_dir, start_program, dns):
    """Sessions on every loop at once, each waiting for DNS and a policy
    service: every answer reaches its own session."""
    import threading
    d = dns(a={"10.2.0.192.bl.test": "127.0.0.2"})
    pol = policy(lambda r: "REJECT no %s" % r["recipient"] if r["recipient"].startswith("r")
                 else "DUNNO")
    config_dir.use_dns(d)
    port = start_ternd(config_dir, start_program,
                       smtpd_client_restrictions="reject_rbl_client bl.test",
                       smtpd_recipient_restrictions="check_policy_service %s" % pol.endpoint)
    errors = []

    def client(n):
        try:
            addr = "192.0.2.10" if n % 5 == 0 else "192.0.2.%d" % (20 + n)
            s = session(port, client=(addr, "c%d.example.net" % n))
            s.cmd("MAIL FROM:<a%d@example.org>" % n)
            for i in range(4):
                who = "r%d_%d@example.test" % (n, i) if i % 2 else "joe@example.test"
                got = s.cmd("RCPT TO:<%s>" % who)
                if addr == "192.0.2.10":
                    want = "554 5.7.1 Service unavailable; Client host [192.0.2.10] blocked " \
                           "using bl.test"
                elif who.startswith("r"):
                    want = "554 5.7.1 <%s>: Recipient address rejected: no %s" % (who, who)
                else:
                    want = "250 2.1.5 Ok"
                if got != want:
                    errors.append("%s: %r != %r" % (who, got, want))
            s.close()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]


def test_flood_against_a_slow_service_is_bounded(policy, config_dir, start_program):
    """More concurrent requests than connections allowed (64 per loop):
    the rest wait for a connection to come free, none is lost, and the
    service never sees more connections than that."""
    import os
    import threading
    slow = policy(mode="slow")
    port = start_ternd(config_dir, start_program,
                       smtpd_recipient_restrictions="check_policy_service { %s, timeout=20s }"
                       % slow.endpoint)
    n = 300
    loops = min(64, max(2, os.cpu_count() or 2))
    replies = []

    def client():
        try:
            s = session(port)
            s.cmd("MAIL FROM:<a@example.org>")
            replies.append(s.cmd("RCPT TO:<joe@example.test>"))
            s.close()
        except Exception as e:  # noqa: BLE001
            replies.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert replies == ["250 2.1.5 Ok"] * n
    assert len(slow.requests) == n
    # reused, never closed: every connection the service saw is still one
    # of the at most 64 per loop
    assert slow.connections <= 64 * loops, slow.connections
