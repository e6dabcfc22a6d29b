/* params.c - tern_params[], the registry of tern.conf (see params.h).
 *
 * Grouped by the stage of the data path that reads them. Defaults are
 * Postfix 3.7's at compatibility level 3.6 (so no ${{...} <level ...}
 * forms); where Postfix derives a default from its own environment
 * (mail_owner, queue_directory, syslog_name) Tern uses its own name.
 * Dynamic defaults (myhostname, mydomain) are computed like Postfix's.
 */
#include "params.h"

#include <string.h>
#include <unistd.h>

/* clang-format off */
#define STR(n, d, h) {n, CFG_STR, d, h, 0, 0, NULL, 0, NULL}
#define BOOL(n, d, h) {n, CFG_BOOL, d, h, 0, 0, NULL, 0, NULL}
#define INT(n, d, lo, hi, h) {n, CFG_INT, d, h, lo, hi, NULL, 0, NULL}
#define TIME(n, d, u, lo, h) {n, CFG_TIME, d, h, lo, 0, u, 0, NULL}
#define SIZE(n, d, h) {n, CFG_SIZE, d, h, 0, 0, NULL, 0, NULL}
#define LIST(n, d, h) {n, CFG_LIST, d, h, 0, 0, NULL, 0, NULL}
#define MAPS(n, d, h) {n, CFG_TABLES, d, h, 0, 0, NULL, 0, NULL}
#define CODE(n, d, h) {n, CFG_INT, d, h, 400, 599, NULL, 0, NULL}
#define LISTEN(n, d, h) {n, CFG_LISTEN, d, h, 0, 0, NULL, CFG_P_TERN, NULL}
/* Tern's own parameters. */
#define TSTR(n, d, h) {n, CFG_STR, d, h, 0, 0, NULL, CFG_P_TERN, NULL}
#define TTIME(n, d, u, lo, h) {n, CFG_TIME, d, h, lo, 0, u, CFG_P_TERN, NULL}
#define TINT(n, d, lo, hi, h) {n, CFG_INT, d, h, lo, hi, NULL, CFG_P_TERN, NULL}
/* clang-format on */

/* Postfix: gethostname(), with ".$mydomain" (or ".localdomain") added
 * when it is not fully qualified. */
static void params_myhostname(const struct cfg *c, const struct cfg_param *p, struct buf *out)
{
	char host[256] = "";
	struct buf dom = BUF_INIT, err = BUF_INIT;

	if (gethostname(host, sizeof(host) - 1) < 0 || host[0] == 0)
		strcpy(host, "localhost");
	buf_set(out, host);
	if (strchr(host, '.') == NULL) {
		/* Only an explicit mydomain: its default derives from us. */
		if (cfg_is_set(c, "mydomain") &&
		    cfg_get_str(c, NULL, "mydomain", &dom, &err) == 0 && dom.len)
			buf_printf(out, ".%s", buf_str(&dom));
		else
			buf_puts(out, ".localdomain");
	}
	buf_free(&dom);
	buf_free(&err);
}

/* Postfix: $myhostname minus its first label, or "localdomain". */
static void params_mydomain(const struct cfg *c, const struct cfg_param *p, struct buf *out)
{
	struct buf host = BUF_INIT, err = BUF_INIT;
	const char *dot;

	if (cfg_get_str(c, NULL, "myhostname", &host, &err) == 0 &&
	    (dot = strchr(buf_str(&host), '.')) != NULL && dot[1])
		buf_set(out, dot + 1);
	else
		buf_set(out, "localdomain");
	buf_free(&host);
	buf_free(&err);
}

/* One entry per line, so a parameter is found by grep. */
/* clang-format off */
const struct cfg_param tern_params[] = {
	/* Identity and addresses. */
	{"myhostname", CFG_STR, "localhost.localdomain", "this host's fully qualified name (default: gethostname(), plus .localdomain if unqualified)", 0, 0, NULL, 0, params_myhostname},
	{"mydomain", CFG_STR, "localdomain", "this host's domain (default: $myhostname minus its first label)", 0, 0, NULL, 0, params_mydomain},
	STR("myorigin", "$myhostname", "domain appended to unqualified sender addresses"),
	LIST("mydestination", "$myhostname, localhost.$mydomain, localhost", "domains delivered locally (local_transport)"),
	LIST("mynetworks", "127.0.0.0/8 [::1]/128", "trusted client networks (permit_mynetworks); Tern defaults to loopback only"),
	STR("mynetworks_style", "host", "how Postfix derives mynetworks (host, subnet, class); informational in Tern"),
	LIST("inet_interfaces", "all", "addresses that *:PORT listeners bind (all, loopback-only, or addresses)"),
	LIST("inet_protocols", "all", "address families to use: all, ipv4, ipv6"),
	LIST("proxy_interfaces", "", "addresses a proxy/NAT forwards to this host (count as local)"),
	STR("mail_name", "Tern", "the product name in the banner and Received: headers"),
	STR("mail_version", TERN_VERSION, "the software version"),
	STR("compatibility_level", "3.6", "Postfix compatibility level whose defaults Tern follows (fixed)"),
	LIST("parent_domain_matches_subdomains", "debug_peer_list,fast_flush_domains,mynetworks,permit_mx_backup_networks,qmqpd_authorized_clients,relay_domains,smtpd_access_maps", "features where a domain also matches its subdomains"),

	/* Files, users, logging. */
	STR("queue_directory", "/var/spool/tern", "where the queue lives (relative: against the config directory)"),
	STR("data_directory", "/var/lib/tern", "where Tern keeps caches and state"),
	STR("mail_owner", "tern", "unprivileged user ternd runs as (Postfix: postfix)"),
	STR("default_privs", "nobody", "user for deliveries to commands and files"),
	TSTR("control_socket", "$data_directory/control.sock", "(Tern) socket on which \"tern\" commands reach ternd"),
	TSTR("pid_file", "$data_directory/ternd.pid", "(Tern) ternd's process id file"),
	STR("maillog_file", "", "log to this file instead of syslog (empty: syslog; /dev/stdout allowed)"),
	STR("syslog_facility", "mail", "syslog facility"),
	STR("syslog_name", "tern", "syslog tag prefix (\"tern/smtpd[pid]\")"),
	LIST("debug_peer_list", "", "clients logged with extra verbosity"),
	INT("debug_peer_level", "2", 1, 10, "verbosity increase for debug_peer_list"),
	TSTR("dns_servers", "", "(Tern) DNS servers as ip or ip@port (e.g. 127.0.0.1@5353); empty: /etc/resolv.conf"),
	BOOL("disable_dns_lookups", "no", "do not use DNS for delivery (deprecated in Postfix)"),
	STR("smtp_dns_resolver_options", "", "resolver options for the SMTP client"),
	BOOL("enable_long_queue_ids", "no", "use long, time-ordered queue IDs"),
	MAPS("authorized_submit_users", "static:anyone", "local users allowed to submit with sendmail"),
	MAPS("authorized_mailq_users", "static:anyone", "local users allowed to list the queue"),
	MAPS("authorized_flush_users", "static:anyone", "local users allowed to flush the queue"),
	TIME("ipc_timeout", "3600s", "s", 1, "time limit for internal communication"),
	TIME("daemon_timeout", "18000s", "s", 1, "time limit for one internal request"),
	TIME("max_idle", "100s", "s", 1, "time an idle worker waits before it exits"),
	INT("max_use", "100", 1, 0, "requests a worker serves before it exits"),
	INT("default_process_limit", "100", 1, 0, "default limit on concurrent processes/workers"),

	/* Listeners (Tern's replacement for master.cf inet services). */
	LISTEN("listen_smtp", "*:25", "(Tern) SMTP listener: host:port, [ipv6]:port, *:port or port; *:PORT binds inet_interfaces"),
	LISTEN("listen_submission", "", "(Tern) submission listener (usually *:587); empty: off"),
	LISTEN("listen_smtps", "", "(Tern) implicit-TLS submission listener (usually *:465, with smtps.smtpd_tls_wrappermode = yes); empty: off"),

	/* Limits on what is received. */
	SIZE("message_size_limit", "10240000", "largest message accepted, in bytes (0: no limit)"),
	{"smtpd_data_memory_limit", CFG_SIZE, "268435456", "(Tern) message content all SMTP sessions together may hold in memory; beyond it DATA gets 452 4.3.1", 1048576, 0, NULL, CFG_P_TERN, NULL},
	SIZE("mailbox_size_limit", "51200000", "largest mailbox or maildir file, in bytes (0: no limit)"),
	INT("line_length_limit", "2048", 1, 0, "longest line kept whole; longer lines are split"),
	SIZE("header_size_limit", "102400", "largest message header, in bytes"),
	INT("header_address_token_limit", "10240", 1, 0, "most address tokens parsed in one header"),
	INT("hopcount_limit", "50", 1, 0, "most Received: headers before a message is bounced as looping"),
	INT("mime_nesting_limit", "100", 1, 0, "deepest MIME nesting inspected"),
	INT("mime_boundary_length_limit", "2048", 1, 0, "longest MIME boundary recognised"),
	SIZE("queue_minfree", "0", "free bytes the queue file system must keep before mail is accepted"),
	TIME("in_flow_delay", "1s", "s", 0, "delay per message when mail arrives faster than it leaves"),
	BOOL("strict_rfc821_envelopes", "no", "require <> around MAIL FROM and RCPT TO addresses"),
	BOOL("strict_8bitmime", "no", "refuse 8-bit data in headers and 7bit bodies"),
	BOOL("strict_smtputf8", "no", "refuse UTF-8 addresses without SMTPUTF8"),
	BOOL("smtputf8_enable", "yes", "offer SMTPUTF8 and accept UTF-8 addresses"),
	LIST("receive_override_options", "", "turn off address mapping, header/body checks or milters for received mail"),

	/* Addresses and local delivery. */
	STR("recipient_delimiter", "", "characters separating user and extension (user+ext)"),
	STR("empty_address_recipient", "MAILER-DAEMON", "recipient of mail addressed to <>"),
	BOOL("append_at_myorigin", "yes", "append @$myorigin to unqualified addresses"),
	BOOL("append_dot_mydomain", "no", "append .$mydomain to host-only domains"),
	BOOL("allow_percent_hack", "yes", "rewrite user%domain@here to user@domain"),
	BOOL("swap_bangpath", "yes", "rewrite site!user to user@site"),
	BOOL("resolve_numeric_domain", "no", "accept user@ipaddress as a local address"),
	BOOL("allow_untrusted_routing", "no", "forward sender-routed addresses (user@a@b) from untrusted clients"),
	BOOL("owner_request_special", "yes", "give owner-foo and foo-request special treatment"),
	MAPS("alias_maps", "hash:/etc/aliases", "alias tables for local delivery"),
	MAPS("alias_database", "hash:/etc/aliases", "alias tables built by \"tern map build\"/newaliases"),
	STR("home_mailbox", "Maildir/", "mailbox path relative to home (Tern default Maildir/; Postfix: empty = mail_spool_directory)"),
	STR("mail_spool_directory", "/var/mail", "where local mailboxes live"),
	STR("mailbox_command", "", "command that delivers to local mailboxes (e.g. an MDA)"),
	LIST("forward_path", "$home/.forward${recipient_delimiter}${extension}, $home/.forward", ".forward files searched for local recipients"),
	LIST("allow_mail_to_commands", "alias, forward", "where delivery to |command is allowed"),
	LIST("allow_mail_to_files", "alias, forward", "where delivery to /file is allowed"),
	MAPS("local_recipient_maps", "unix:passwd.byname $alias_maps", "valid local recipients (empty: accept any)"),
	BOOL("show_user_unknown_table_name", "yes", "name the table in \"User unknown\" replies"),
	LIST("canonical_classes", "envelope_sender, envelope_recipient, header_sender, header_recipient", "addresses that canonical maps rewrite"),
	MAPS("canonical_maps", "", "address mapping for senders and recipients"),
	MAPS("sender_canonical_maps", "", "address mapping for senders"),
	MAPS("recipient_canonical_maps", "", "address mapping for recipients"),
	LIST("masquerade_domains", "", "domains whose subdomains are hidden in addresses"),
	LIST("masquerade_exceptions", "", "users not subject to masquerading"),

	/* Virtual and relay domains. */
	LIST("virtual_alias_domains", "$virtual_alias_maps", "domains with only aliases (virtual_alias_maps)"),
	MAPS("virtual_alias_maps", "", "address aliases for any domain"),
	LIST("virtual_mailbox_domains", "$virtual_mailbox_maps", "domains delivered by virtual_transport"),
	MAPS("virtual_mailbox_maps", "", "valid virtual mailboxes and their paths"),
	STR("virtual_mailbox_base", "", "directory virtual mailbox paths are relative to"),
	INT("virtual_minimum_uid", "100", 1, 0, "smallest uid for virtual deliveries"),
	MAPS("virtual_uid_maps", "", "uid for virtual deliveries"),
	MAPS("virtual_gid_maps", "", "gid for virtual deliveries"),
	LIST("relay_domains", "", "domains this host relays mail to (beyond mydestination)"),
	MAPS("relay_recipient_maps", "", "valid recipients in relay_domains (empty: accept any)"),

	/* Routing and transports. */
	STR("relayhost", "", "send all non-local mail via this host ([host]:port or host)"),
	MAPS("transport_maps", "", "per-domain/address transport and next hop"),
	STR("default_transport", "smtp", "transport for domains not otherwise routed"),
	STR("local_transport", "local:$myhostname", "transport for mydestination"),
	STR("virtual_transport", "virtual", "transport for virtual_mailbox_domains"),
	STR("relay_transport", "relay", "transport for relay_domains"),
	LIST("defer_transports", "", "transports whose mail is held back until a flush"),
	STR("address_verify_map", "btree:$data_directory/verify_cache", "cache of address verification results"),
	STR("address_verify_sender", "$double_bounce_sender", "sender of address verification probes"),
	STR("double_bounce_sender", "double-bounce", "sender of undeliverable bounce notices"),

	/* Queue and scheduling. */
	TIME("queue_run_delay", "300s", "s", 1, "how often the deferred queue is scanned"),
	TIME("minimal_backoff_time", "300s", "s", 1, "shortest wait before retrying a deferred message"),
	TIME("maximal_backoff_time", "4000s", "s", 1, "longest wait between retries"),
	TIME("maximal_queue_lifetime", "5d", "d", 0, "how long a message is retried before it bounces (0: try once)"),
	TIME("bounce_queue_lifetime", "5d", "d", 0, "how long a bounce message is retried"),
	TIME("delay_warning_time", "0h", "h", 0, "send a delay notice after this long (0: never)"),
	BOOL("soft_bounce", "no", "turn permanent errors into temporary ones (for testing)"),
	INT("qmgr_message_active_limit", "20000", 1, 0, "most messages in the active queue"),
	INT("qmgr_message_recipient_limit", "20000", 1, 0, "most recipients kept in memory"),
	INT("default_destination_concurrency_limit", "20", 1, 0, "parallel deliveries per destination"),
	INT("default_destination_recipient_limit", "50", 1, 0, "recipients per delivery"),
	TIME("default_destination_rate_delay", "0s", "s", 0, "pause between deliveries to one destination"),
	INT("initial_destination_concurrency", "5", 1, 0, "starting concurrency per destination"),
	INT("local_destination_concurrency_limit", "2", 1, 0, "parallel local deliveries per recipient"),
	INT("local_destination_recipient_limit", "1", 1, 0, "recipients per local delivery"),
	TTIME("queue_commit_delay", "0ms", "ms", 0, "(Tern) longest wait to group a message's fsync with others (0: commit at once)"),

	/* Bounces and notices. */
	LIST("notify_classes", "resource, software", "problems reported to the postmaster"),
	STR("bounce_notice_recipient", "postmaster", "recipient of bounce notices (notify_classes bounce)"),
	STR("2bounce_notice_recipient", "postmaster", "recipient of undeliverable bounces"),
	STR("delay_notice_recipient", "postmaster", "recipient of delay notices (notify_classes delay)"),
	STR("error_notice_recipient", "postmaster", "recipient of error notices"),
	INT("duplicate_filter_limit", "1000", 0, 0, "addresses remembered per recipient against duplicate alias deliveries (0: no limit)"),
	SIZE("bounce_size_limit", "50000", "most of the original message returned in a bounce, in bytes"),

	/* BCC and content checks. */
	STR("content_filter", "", "transport:destination every message received is sent to first (an after-queue filter)"),
	STR("always_bcc", "", "address that receives a copy of every message"),
	MAPS("sender_bcc_maps", "", "copy addresses by sender"),
	MAPS("recipient_bcc_maps", "", "copy addresses by recipient"),
	MAPS("header_checks", "", "pattern tables applied to header lines"),
	MAPS("mime_header_checks", "$header_checks", "pattern tables for MIME headers"),
	MAPS("nested_header_checks", "$header_checks", "pattern tables for attached message headers"),
	MAPS("body_checks", "", "pattern tables applied to body lines"),
	SIZE("body_checks_size_limit", "51200", "bytes of each body part that body_checks inspect"),
	MAPS("milter_header_checks", "", "header checks applied to headers added by milters"),

	/* SMTP server. */
	STR("smtpd_banner", "$myhostname ESMTP $mail_name", "text after 220 in the greeting"),
	TIME("smtpd_timeout", "300s", "s", 1, "time limit for a client command or data"),
	INT("smtpd_recipient_limit", "1000", 1, 0, "most recipients per message"),
	INT("smtpd_hard_error_limit", "20", 1, 0, "errors before the connection is closed"),
	INT("smtpd_soft_error_limit", "10", 0, 0, "errors before each reply is delayed"),
	TIME("smtpd_error_sleep_time", "1s", "s", 0, "delay before error replies past the soft limit"),
	INT("smtpd_junk_command_limit", "100", 1, 0, "NOOP/VRFY/ETRN/RSET commands allowed per session"),
	BOOL("smtpd_helo_required", "no", "require HELO/EHLO before MAIL"),
	BOOL("smtpd_delay_reject", "yes", "evaluate client/helo/sender restrictions at RCPT"),
	BOOL("disable_vrfy_command", "no", "refuse VRFY"),
	LIST("smtpd_noop_commands", "", "commands answered with 250 and otherwise ignored"),
	LIST("smtpd_discard_ehlo_keywords", "", "EHLO keywords not offered (e.g. pipelining, silent-discard)"),
	MAPS("smtpd_discard_ehlo_keyword_address_maps", "", "EHLO keywords not offered, by client address"),
	STR("smtpd_forbid_bare_newline", "no", "reject or disconnect on a bare LF (no, normalize, reject)"),
	LIST("smtpd_forbid_bare_newline_exclusions", "$mynetworks", "clients exempt from smtpd_forbid_bare_newline"),
	CODE("smtpd_forbid_bare_newline_reject_code", "550", "reply code for a bare newline"),
	BOOL("smtpd_forbid_unauth_pipelining", "yes", "disconnect clients that pipeline where not allowed (Postfix 3.9+ default; 3.7: no)"),
	BOOL("smtpd_peername_lookup", "yes", "look up the client's host name in DNS"),
	BOOL("smtpd_client_port_logging", "no", "log the client's port"),
	INT("smtpd_history_flush_threshold", "100", 1, 0, "command history lines kept for postmaster notices"),
	STR("smtpd_reject_footer", "", "text appended to 4xx/5xx replies"),
	MAPS("smtpd_reject_footer_maps", "", "footer text by reply"),
	STR("smtpd_expansion_filter", "\\t\\40!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\\\]^_`abcdefghijklmnopqrstuvwxyz{|}~", "characters allowed in $name expansion of client data"),
	LIST("smtpd_log_access_permit_actions", "", "access(5) permit actions that are logged"),
	LIST("smtpd_authorized_xclient_hosts", "", "clients allowed to use XCLIENT"),
	LIST("smtpd_authorized_verp_clients", "", "clients allowed to use XVERP"),
	STR("smtpd_upstream_proxy_protocol", "", "expect a proxy header (haproxy) before SMTP"),
	TIME("smtpd_upstream_proxy_timeout", "5s", "s", 1, "time limit for the proxy header"),
	BOOL("smtpd_per_record_deadline", "no", "apply smtpd_timeout per read/write instead of per command"),
	STR("smtpd_proxy_filter", "", "before-queue content filter (host:port)"),
	MAPS("smtpd_command_filter", "", "rewrite client commands before parsing"),
	INT("smtpd_client_connection_count_limit", "50", 0, 0, "concurrent connections per client (0: no limit)"),
	INT("smtpd_client_connection_rate_limit", "0", 0, 0, "connections per client per anvil_rate_time_unit (0: no limit)"),
	INT("smtpd_client_message_rate_limit", "0", 0, 0, "messages per client per anvil_rate_time_unit (0: no limit)"),
	INT("smtpd_client_recipient_rate_limit", "0", 0, 0, "recipients per client per anvil_rate_time_unit (0: no limit)"),
	INT("smtpd_client_new_tls_session_rate_limit", "0", 0, 0, "new TLS sessions per client per anvil_rate_time_unit (0: no limit)"),
	INT("smtpd_client_auth_rate_limit", "0", 0, 0, "AUTH commands per client per anvil_rate_time_unit (0: no limit)"),
	INT("smtpd_client_auth_failure_limit", "10", 0, 0, "(Tern) failed AUTH attempts per client per anvil_rate_time_unit before AUTH is refused (0: no limit)"),
	LIST("smtpd_client_event_limit_exceptions", "$mynetworks", "clients exempt from the rate and count limits"),
	TIME("anvil_rate_time_unit", "60s", "s", 1, "time unit of the client rate limits"),

	/* SMTP server access restrictions. */
	LIST("smtpd_client_restrictions", "", "restrictions at connect (at RCPT with smtpd_delay_reject)"),
	LIST("smtpd_helo_restrictions", "", "restrictions at HELO/EHLO"),
	LIST("smtpd_sender_restrictions", "", "restrictions at MAIL FROM"),
	LIST("smtpd_relay_restrictions", "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination", "relay control at RCPT TO, before smtpd_recipient_restrictions (Postfix: defer_unauth_destination)"),
	LIST("smtpd_recipient_restrictions", "", "restrictions at RCPT TO"),
	LIST("smtpd_data_restrictions", "", "restrictions at DATA/BDAT"),
	LIST("smtpd_end_of_data_restrictions", "", "restrictions at the end of the message"),
	LIST("smtpd_etrn_restrictions", "", "restrictions at ETRN"),
	LIST("smtpd_restriction_classes", "", "names of user-defined restriction lists (each set as name = ...)"),
	STR("smtpd_null_access_lookup_key", "<>", "access table key for the null sender"),
	BOOL("smtpd_reject_unlisted_sender", "no", "reject senders in our domains that are not valid recipients"),
	BOOL("smtpd_reject_unlisted_recipient", "yes", "reject recipients in our domains that are not valid"),
	MAPS("smtpd_sender_login_maps", "", "which SASL logins own which sender addresses"),
	MAPS("rbl_reply_maps", "", "reply templates for reject_rbl_* restrictions"),
	STR("default_rbl_reply", "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using $rbl_domain${rbl_reason?; $rbl_reason}", "reply template for reject_rbl_* when rbl_reply_maps has none"),
	LIST("permit_mx_backup_networks", "", "networks whose primary MX hosts permit_mx_backup accepts (empty: any)"),
	CODE("access_map_reject_code", "554", "reply code for REJECT in access tables"),
	CODE("access_map_defer_code", "450", "reply code for DEFER in access tables"),
	CODE("reject_code", "554", "reply code for the reject restriction"),
	CODE("defer_code", "450", "reply code for the defer restriction"),
	CODE("relay_domains_reject_code", "554", "reply code for reject_unauth_destination"),
	CODE("maps_rbl_reject_code", "554", "reply code for reject_rbl_* restrictions"),
	CODE("invalid_hostname_reject_code", "501", "reply code for reject_invalid_helo_hostname"),
	CODE("non_fqdn_reject_code", "504", "reply code for reject_non_fqdn_*"),
	CODE("plaintext_reject_code", "450", "reply code when TLS is required"),
	CODE("unknown_address_reject_code", "450", "reply code for unresolvable sender/recipient domains"),
	CODE("unknown_client_reject_code", "450", "reply code for reject_unknown_client_hostname"),
	CODE("unknown_hostname_reject_code", "450", "reply code for reject_unknown_helo_hostname"),
	CODE("unknown_local_recipient_reject_code", "550", "reply code for an unknown local recipient"),
	CODE("unknown_relay_recipient_reject_code", "550", "reply code for an unknown relay recipient"),
	CODE("unknown_virtual_alias_reject_code", "550", "reply code for an unknown virtual alias"),
	CODE("unknown_virtual_mailbox_reject_code", "550", "reply code for an unknown virtual mailbox"),
	CODE("unverified_sender_reject_code", "450", "reply code for a sender that failed verification"),
	CODE("unverified_recipient_reject_code", "450", "reply code for a recipient that failed verification"),
	CODE("unverified_sender_defer_code", "450", "reply code when sender verification is pending"),
	CODE("unverified_recipient_defer_code", "450", "reply code when recipient verification is pending"),
	STR("unverified_sender_reject_reason", "", "reply text for a failed sender verification"),
	STR("unverified_recipient_reject_reason", "", "reply text for a failed recipient verification"),
	CODE("multi_recipient_bounce_reject_code", "550", "reply code for reject_multi_recipient_bounce"),
	STR("reject_tempfail_action", "defer_if_permit", "action when a reject_* test fails temporarily"),
	STR("unknown_address_tempfail_action", "$reject_tempfail_action", "action when reject_unknown_*_domain fails temporarily"),
	STR("unknown_helo_hostname_tempfail_action", "$reject_tempfail_action", "action when reject_unknown_helo_hostname fails temporarily"),

	/* Policy service client (check_policy_service). */
	TIME("smtpd_policy_service_timeout", "100s", "s", 1, "time limit to connect to, write to and read from a policy service"),
	TIME("smtpd_policy_service_max_idle", "300s", "s", 1, "close an unused policy connection after this"),
	TIME("smtpd_policy_service_max_ttl", "1000s", "s", 1, "close a policy connection after this, used or not"),
	INT("smtpd_policy_service_request_limit", "0", 0, 0, "requests per policy connection (0: no limit)"),
	INT("smtpd_policy_service_try_limit", "2", 1, 0, "attempts per policy request"),
	TIME("smtpd_policy_service_retry_delay", "1s", "s", 0, "pause between policy attempts"),
	STR("smtpd_policy_service_default_action", "451 4.3.5 Server configuration problem", "action when a policy service fails"),
	STR("smtpd_policy_service_policy_context", "", "sent as policy_context in each request"),

	/* Milter client. */
	LIST("smtpd_milters", "", "milters for mail received over SMTP ({ socket, name=value... } per milter)"),
	LIST("non_smtpd_milters", "", "milters for mail submitted locally"),
	MAPS("smtpd_milter_maps", "", "milters by client address (DISABLE turns them off)"),
	STR("milter_default_action", "shutdown", "what to do when a milter fails: accept, reject, tempfail, quarantine, shutdown (Postfix 3.11 default)"),
	INT("milter_protocol", "6", 2, 6, "highest milter protocol version offered"),
	TIME("milter_connect_timeout", "30s", "s", 1, "time limit to connect to a milter"),
	TIME("milter_command_timeout", "30s", "s", 1, "time limit for a milter's reply to a command"),
	TIME("milter_content_timeout", "300s", "s", 1, "time limit for a milter's reply to content"),
	LIST("milter_connect_macros", "j {daemon_name} {daemon_addr} v _", "macros sent at connect"),
	LIST("milter_helo_macros", "{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}", "macros sent at HELO"),
	LIST("milter_mail_macros", "i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}", "macros sent at MAIL FROM"),
	LIST("milter_rcpt_macros", "i {rcpt_addr} {rcpt_host} {rcpt_mailer}", "macros sent at RCPT TO"),
	LIST("milter_data_macros", "i", "macros sent at DATA"),
	LIST("milter_end_of_header_macros", "i", "macros sent at the end of the header"),
	LIST("milter_end_of_data_macros", "i", "macros sent at the end of the message"),
	LIST("milter_unknown_command_macros", "", "macros sent with an unknown command"),
	STR("milter_macro_daemon_name", "$myhostname", "value of {daemon_name}"),
	STR("milter_macro_v", "$mail_name $mail_version", "value of {v}"),
	LIST("milter_macro_defaults", "", "name=value defaults for macros without a value"),

	/* SMTP server TLS and AUTH. */
	STR("smtpd_tls_security_level", "", "server TLS: none/empty, may (offer STARTTLS), encrypt (require it)"),
	STR("smtpd_tls_cert_file", "", "server certificate (PEM)"),
	STR("smtpd_tls_key_file", "$smtpd_tls_cert_file", "server private key (PEM)"),
	STR("smtpd_tls_eccert_file", "", "server ECDSA certificate (PEM), next to the RSA one"),
	STR("smtpd_tls_eckey_file", "$smtpd_tls_eccert_file", "server ECDSA private key (PEM)"),
	LIST("smtpd_tls_chain_files", "", "key and certificate chain files, key first"),
	STR("smtpd_tls_CAfile", "", "CA certificates for client certificates"),
	STR("smtpd_tls_CApath", "", "directory of hashed CA certificates for client certificates (openssl rehash)"),
	INT("smtpd_tls_ccert_verifydepth", "9", 1, 100, "longest client certificate chain (CAs above the certificate)"),
	MAPS("tls_server_sni_maps", "", "key and certificate chain files by the SNI name a client sends"),
	LIST("smtpd_tls_protocols", ">=TLSv1.2", "TLS protocols with opportunistic TLS (Postfix: >=TLSv1)"),
	LIST("smtpd_tls_mandatory_protocols", ">=TLSv1.2", "TLS protocols when TLS is required (Postfix: >=TLSv1)"),
	STR("smtpd_tls_ciphers", "medium", "cipher grade with opportunistic TLS"),
	STR("smtpd_tls_mandatory_ciphers", "medium", "cipher grade when TLS is required"),
	BOOL("smtpd_tls_wrappermode", "no", "TLS from the first byte (port 465) instead of STARTTLS"),
	BOOL("smtpd_tls_auth_only", "yes", "offer AUTH only over TLS (Postfix: no)"),
	BOOL("smtpd_tls_received_header", "yes", "record TLS details in Received: (Postfix: no)"),
	INT("smtpd_tls_loglevel", "1", 0, 4, "TLS logging: 0 failures only, 1 also the \"TLS connection established\" line (Postfix: 0)"),
	BOOL("smtpd_tls_ask_ccert", "no", "ask clients for a certificate"),
	BOOL("smtpd_tls_req_ccert", "no", "require a client certificate"),
	STR("smtpd_tls_fingerprint_digest", "sha256", "digest of client certificate fingerprints (relay_clientcerts, check_ccert_access)"),
	MAPS("relay_clientcerts", "", "client certificate fingerprints that permit_tls_clientcerts trusts"),
	TIME("smtpd_tls_session_cache_timeout", "3600s", "s", 0, "lifetime of cached TLS sessions"),
	TIME("smtpd_starttls_timeout", "300s", "s", 1, "time limit for the TLS handshake"),
	STR("tls_high_cipherlist", "aNULL:-aNULL:HIGH:@STRENGTH", "OpenSSL ciphers for grade high"),
	STR("tls_medium_cipherlist", "aNULL:-aNULL:HIGH:MEDIUM:+RC4:@STRENGTH", "OpenSSL ciphers for grade medium"),
	BOOL("smtpd_sasl_auth_enable", "no", "offer SMTP AUTH"),
	STR("smtpd_sasl_type", "passwd", "SASL back end: passwd (crypt(3) password file) or dovecot (Postfix: cyrus)"),
	STR("smtpd_sasl_path", "sasl_passwd", "passwd: the password file (relative: config directory); dovecot: its auth socket"),
	LIST("smtpd_sasl_security_options", "noanonymous", "mechanisms allowed without TLS"),
	LIST("smtpd_sasl_tls_security_options", "$smtpd_sasl_security_options", "mechanisms allowed with TLS"),
	BOOL("smtpd_sasl_authenticated_header", "no", "record the AUTH login in Received:"),
	STR("smtpd_sasl_local_domain", "", "realm appended to logins"),
	LIST("smtpd_sasl_exceptions_networks", "", "clients not offered AUTH"),
	BOOL("broken_sasl_auth_clients", "no", "also announce AUTH=... for old clients"),

	/* SMTP client. */
	TIME("smtp_connect_timeout", "30s", "s", 0, "time limit to connect to a server"),
	TIME("smtp_helo_timeout", "300s", "s", 1, "time limit for the greeting and HELO reply"),
	TIME("smtp_mail_timeout", "300s", "s", 1, "time limit for the MAIL FROM reply"),
	TIME("smtp_rcpt_timeout", "300s", "s", 1, "time limit for a RCPT TO reply"),
	TIME("smtp_data_init_timeout", "120s", "s", 1, "time limit for the DATA reply"),
	TIME("smtp_data_xfer_timeout", "180s", "s", 1, "time limit to send message content"),
	TIME("smtp_data_done_timeout", "600s", "s", 1, "time limit for the end-of-data reply"),
	TIME("smtp_quit_timeout", "300s", "s", 1, "time limit for the QUIT reply"),
	TIME("smtp_rset_timeout", "20s", "s", 1, "time limit for the RSET reply"),
	TIME("smtp_xforward_timeout", "300s", "s", 1, "time limit for the XFORWARD reply"),
	TIME("smtp_starttls_timeout", "300s", "s", 1, "time limit for the TLS handshake"),
	STR("smtp_helo_name", "$myhostname", "name sent in HELO/EHLO"),
	STR("smtp_bind_address", "", "local IPv4 address for outgoing connections"),
	STR("smtp_bind_address6", "", "local IPv6 address for outgoing connections"),
	LIST("smtp_host_lookup", "dns", "how server addresses are found: dns, native"),
	STR("smtp_dns_support_level", "", "DNS features: disabled, enabled, dnssec"),
	STR("smtp_address_preference", "any", "address family preferred: ipv4, ipv6, any"),
	INT("smtp_mx_address_limit", "5", 0, 0, "most addresses tried per delivery (0: no limit)"),
	INT("smtp_mx_session_limit", "2", 0, 0, "most sessions per delivery (0: no limit)"),
	BOOL("smtp_skip_5xx_greeting", "yes", "try the next server after a 5xx greeting"),
	INT("smtp_line_length_limit", "998", 0, 0, "longest line sent; longer ones are folded (0: no limit)"),
	STR("smtp_tls_security_level", "may", "client TLS: none/empty, may, encrypt, dane (= may), verify, secure"),
	STR("smtp_tls_CAfile", "", "CA certificates for server verification"),
	STR("smtp_tls_CApath", "", "directory of CA certificates for server verification"),
	INT("smtp_tls_scert_verifydepth", "9", 1, 100, "longest server certificate chain (CAs above the certificate)"),
	STR("smtp_tls_servername", "", "SNI to send: empty (none), hostname, nexthop, or a DNS name"),
	STR("smtp_tls_cert_file", "", "client certificate (PEM), for servers that ask"),
	STR("smtp_tls_key_file", "$smtp_tls_cert_file", "client private key (PEM)"),
	MAPS("smtp_tls_policy_maps", "", "TLS level (and match=) by next hop"),
	STR("smtp_tls_verify_cert_match", "hostname", "names a verify-level certificate must carry"),
	STR("smtp_tls_secure_cert_match", "nexthop, dot-nexthop", "names a secure-level certificate must carry"),
	INT("smtp_tls_loglevel", "0", 0, 4, "TLS logging detail"),
	LIST("smtp_tls_protocols", ">=TLSv1", "TLS protocols with opportunistic TLS"),
	LIST("smtp_tls_mandatory_protocols", ">=TLSv1", "TLS protocols when TLS is required"),
	STR("smtp_tls_ciphers", "medium", "cipher grade with opportunistic TLS"),
	BOOL("smtp_tls_note_starttls_offer", "no", "log servers that offer STARTTLS"),
	BOOL("smtp_tls_wrappermode", "no", "TLS from the first byte (port 465)"),
	BOOL("smtp_sasl_auth_enable", "no", "authenticate to servers"),
	MAPS("smtp_sasl_password_maps", "", "credentials by next hop"),
	LIST("smtp_sasl_security_options", "noplaintext, noanonymous", "mechanisms allowed without TLS"),
	LIST("smtp_sasl_tls_security_options", "noanonymous", "mechanisms allowed with TLS (Tern: plaintext PLAIN/LOGIN allowed)"),
	BOOL("smtp_sender_dependent_authentication", "no", "look credentials up by sender first"),
	BOOL("smtp_sasl_auth_soft_bounce", "yes", "defer instead of bounce when authentication fails"),
	BOOL("smtp_connection_cache_on_demand", "yes", "reuse connections to busy destinations"),
	LIST("smtp_connection_cache_destinations", "", "destinations whose connections are always reused"),
	TIME("smtp_connection_cache_time_limit", "2s", "s", 1, "how long an idle cached connection is kept"),
	TIME("smtp_connection_reuse_time_limit", "300s", "s", 1, "how long a connection is reused"),
	INT("smtp_destination_concurrency_limit", "$default_destination_concurrency_limit", 1, 0, "parallel SMTP deliveries per destination"),
	INT("smtp_destination_recipient_limit", "$default_destination_recipient_limit", 1, 0, "recipients per SMTP delivery"),
	MAPS("smtp_header_checks", "", "header checks on outgoing mail"),
	MAPS("smtp_body_checks", "", "body checks on outgoing mail"),

	/* LMTP client. */
	TIME("lmtp_connect_timeout", "0s", "s", 0, "time limit to connect to an LMTP server (0: system default)"),
	TIME("lmtp_lhlo_timeout", "300s", "s", 1, "time limit for the greeting and LHLO reply"),
	TIME("lmtp_mail_timeout", "300s", "s", 1, "time limit for the MAIL FROM reply"),
	TIME("lmtp_rcpt_timeout", "300s", "s", 1, "time limit for a RCPT TO reply"),
	TIME("lmtp_data_init_timeout", "120s", "s", 1, "time limit for the DATA reply"),
	TIME("lmtp_data_xfer_timeout", "180s", "s", 1, "time limit to send message content"),
	TIME("lmtp_data_done_timeout", "600s", "s", 1, "time limit for the per-recipient replies"),
	TIME("lmtp_quit_timeout", "300s", "s", 1, "time limit for the QUIT reply"),
	TIME("lmtp_rset_timeout", "20s", "s", 1, "time limit for the RSET reply"),
	INT("lmtp_destination_concurrency_limit", "$default_destination_concurrency_limit", 1, 0, "parallel LMTP deliveries per destination"),
	INT("lmtp_destination_recipient_limit", "$default_destination_recipient_limit", 1, 0, "recipients per LMTP delivery"),
	INT("relay_destination_concurrency_limit", "$default_destination_concurrency_limit", 1, 0, "parallel deliveries per relay_domains destination"),
	INT("relay_destination_recipient_limit", "$default_destination_recipient_limit", 1, 0, "recipients per relay delivery"),

	{NULL, CFG_STR, NULL, NULL, 0, 0, NULL, 0, NULL},
};
/* clang-format on */
