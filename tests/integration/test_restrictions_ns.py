"""test_restrictions_ns.py - check_*_ns_access (Postfix's
check_server_access() for name servers): the NS hosts of the sender's,
recipient's, HELO's or client's domain — or of the nearest parent domain
that has NS records — looked up by name, then by address, in an access
table. dnsmasq serves the NS records (raw --dns-rr, type 2)."""

from restr_util import session, start_ternd


def wire_name(name):
    """A domain name in DNS wire format, as hex (for --dns-rr)."""
    out = b"".join(bytes([len(label)]) + label.encode() for label in name.split("."))
    return (out + b"\0").hex()


def test_ns_access_by_name_and_address_with_parent_walk(config_dir, start_program, dns):
    server = dns(a={"ns1.evil.test": ["192.0.2.53"], "ns.good.test": ["192.0.2.80"],
                    "ns.bad-ip.test": ["192.0.2.66"]},
                 extra=["--dns-rr=evil.test,2,%s" % wire_name("ns1.evil.test"),
                        "--dns-rr=good.test,2,%s" % wire_name("ns.good.test"),
                        "--dns-rr=bad-ip.test,2,%s" % wire_name("ns.bad-ip.test")])
    table = config_dir.write_table("ns_access", "ns1.evil.test REJECT evil name server\n"
                                                "192.0.2.66 REJECT bad name server address\n")
    config_dir.use_dns(server)
    port = start_ternd(config_dir, start_program,
                       smtpd_sender_restrictions="check_sender_ns_access texthash:%s" % table,
                       smtpd_recipient_restrictions="check_recipient_ns_access texthash:%s, "
                                                    "permit_mynetworks, reject_unauth_destination"
                                                    % table,
                       mynetworks="127.0.0.0/8, 192.0.2.0/24")
    s = session(port)
    # sub.evil.test has no NS: the parent's (evil.test) count; with
    # smtpd_delay_reject (the default) the sender is judged at RCPT
    assert s.cmd("MAIL FROM:<a@sub.evil.test>") == "250 2.1.0 Ok"
    assert s.cmd("RCPT TO:<joe@example.test>") == \
        "554 5.7.1 <a@sub.evil.test>: Sender address rejected: evil name server"
    assert s.cmd("RSET").startswith("250")
    assert s.cmd("MAIL FROM:<a@good.test>") == "250 2.1.0 Ok"
    assert s.cmd("RCPT TO:<joe@bad-ip.test>") == \
        "554 5.7.1 <joe@bad-ip.test>: Recipient address rejected: bad name server address"
    assert s.cmd("RCPT TO:<joe@example.test>") == "250 2.1.5 Ok"
    s.close()
