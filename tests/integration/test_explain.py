"""test_explain.py - `tern explain`: a dry run of the access restrictions
for one imagined session, with the real tables, policy services and DNS:
the seed 002 restriction class step by step, a policy exchange, a DNS
list answer, the final replies and exit status; nothing is queued."""

import harness
from restr_util import PolicyServer


def explain(cfg, *args):
    return harness.run_tern("explain", *args, config_dir=cfg)


def seed_config(cfg):
    rr = cfg.write_table("restricted_recipient", "all@example.test restricted_recipient\n")
    ps = cfg.write_table("privileged_sender", "boss@example.org OK\n")
    for t in (rr, ps):
        harness.run_tern("map", "build", "hash:%s" % t, check=True)
    cfg.set(mydestination="", alias_maps="", local_recipient_maps="",
            virtual_mailbox_domains="example.test",
            virtual_mailbox_maps="inline:{joe@example.test=x, all@example.test=y}",
            smtpd_restriction_classes="restricted_recipient",
            smtpd_recipient_restrictions="check_recipient_access hash:%s, "
                                         "reject_unauth_destination" % rr,
            restricted_recipient="check_sender_access hash:%s, reject" % ps)
    return rr, ps


def test_seed_class_step_by_step(config_dir):
    rr, ps = seed_config(config_dir)
    rc, out, err = explain(config_dir, "--client", "192.0.2.10", "--helo", "mail.example.org",
                           "--from", "someone@example.org", "--to", "all@example.test",
                           "--to", "joe@example.test")
    assert rc == 1, out + err
    steps = [line.strip() for line in out.splitlines()]
    expected = [
        "== RCPT TO:<all@example.test>",
        "smtpd_recipient_restrictions:",
        "check_recipient_access hash:%s" % rr,
        'hash:%s: "all@example.test" -> restricted_recipient' % rr,
        "restricted_recipient",
        "check_sender_access hash:%s" % ps,
        'hash:%s: "someone@example.org" not found' % ps,
        "=> DUNNO",
        "reject",
        "log: reject: 554 5.7.1 <all@example.test>: Recipient address rejected: Access denied",
        "reply: 554 5.7.1 <all@example.test>: Recipient address rejected: Access denied",
        "== RCPT TO:<joe@example.test>",
        "reply: 250 2.1.5 Ok",
        "result: some commands refused",
    ]
    pos = 0
    for want in expected:  # in this order
        assert want in steps[pos:], "missing %r after line %d:\n%s" % (want, pos, out)
        pos = steps.index(want, pos) + 1
    rc, out, err = explain(config_dir, "--client", "192.0.2.10", "--from", "boss@example.org",
                           "--to", "all@example.test")
    assert rc == 0 and 'hash:%s: "boss@example.org" -> OK' % ps in out, out
    assert "result: accepted" in out
    # nothing was queued, nothing logged
    rc, q, err = harness.run_tern("queue", "list", config_dir=config_dir)
    assert "@" not in q
    assert "reject:" not in config_dir.maillog()


def test_policy_and_dns_shown(config_dir, dns):
    d = dns(a={"10.2.0.192.bl.test": "127.0.0.2"}, txt={"10.2.0.192.bl.test": "listed"})
    pol = PolicyServer(lambda r: "PREPEND X-Seen: %s" % r["protocol_state"])
    try:
        config_dir.use_dns(d)
        config_dir.set(mydestination="", alias_maps="", local_recipient_maps="",
                       virtual_mailbox_domains="example.test",
                       virtual_mailbox_maps="static:x",
                       smtpd_client_restrictions="reject_rbl_client bl.test",
                       smtpd_recipient_restrictions="check_policy_service %s" % pol.endpoint)
        rc, out, err = explain(config_dir, "--client", "192.0.2.11", "--from", "a@example.org",
                               "--to", "joe@example.test")
        assert rc == 0, out + err
        assert "dns A 11.2.0.192.bl.test: NXDOMAIN" in out
        assert "policy %s: action=PREPEND X-Seen: RCPT" % pol.endpoint in out
        assert "PREPEND:\nX-Seen: RCPT" in out
        rc, out, err = explain(config_dir, "--client", "192.0.2.10", "--from", "a@example.org",
                               "--to", "joe@example.test")
        assert rc == 1
        assert "dns A 10.2.0.192.bl.test: found: 127.0.0.2" in out, out
        assert ("reply: 554 5.7.1 Service unavailable; Client host [192.0.2.10] blocked using "
                "bl.test; listed") in out
        assert len(pol.requests) == 1  # the refused recipient never reached it
    finally:
        pol.stop()


def test_usage_errors(config_dir):
    rc, out, err = explain(config_dir, "--client", "192.0.2.1")
    assert rc == 2 and "usage: tern explain" in out
