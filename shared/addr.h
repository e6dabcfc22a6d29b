/* addr.h - RFC 5321 mailbox parsing and the one canonical address form.
 *
 * addr_parse_path() takes the argument of MAIL FROM:/RCPT TO: ("<a@b> SIZE=1"),
 * strips source routes, decodes quoted local parts and returns the rest of
 * the line for the ESMTP parameters. struct addr keeps the local part
 * unquoted and the domain lower-cased; addr_format_smtp() re-quotes it.
 * Errors are ADDR_ERR_* codes plus a message; the SMTP server maps them to
 * replies (501 5.1.3/5.1.7 for syntax and length, 553 5.6.7 for non-ASCII
 * without SMTPUTF8, RFC 6531 §3.7.4.1). Never fatal on input.
 */
#ifndef TERN_ADDR_H
#define TERN_ADDR_H

#include "buf.h"
#include "inet.h"

#include <stddef.h>

/* RFC 5321 §4.5.3.1 size limits (octets). */
#define ADDR_LOCAL_MAX 64
#define ADDR_DOMAIN_MAX 255
#define ADDR_PATH_MAX 256
#define ADDR_LABEL_MAX 63
/* Lenient bound on the local part when ADDR_PARSE_STRICT is not given:
 * Postfix enforces no local-part limit, but we still bound input. */
#define ADDR_LOCAL_LENIENT_MAX 1000

/* addr_parse_path() flags */
#define ADDR_PARSE_SMTPUTF8 0x01    /* RFC 6531: UTF-8 local part and domain allowed */
#define ADDR_PARSE_ALLOW_BARE 0x02  /* strict_rfc821_envelopes=no: "a@b" without <> */
#define ADDR_PARSE_STRICT 0x04	    /* local part <= 64, path <= 256, dot-atom, no spaces */
#define ADDR_PARSE_NEED_DOMAIN 0x08 /* refuse "<user>" (the caller cannot qualify) */

/* struct addr.flags */
#define ADDR_F_NULL 0x01    /* the null path "<>" */
#define ADDR_F_LITERAL 0x02 /* domain is an address literal "[...]" */
#define ADDR_F_UTF8 0x04    /* local part or domain has non-ASCII (needs SMTPUTF8) */
#define ADDR_F_ROUTE 0x08   /* a source route was present and stripped */

enum addr_status {
	ADDR_OK = 0,
	ADDR_ERR_SYNTAX,	/* bad address syntax */
	ADDR_ERR_LOCAL_LENGTH,	/* local part too long */
	ADDR_ERR_DOMAIN_LENGTH, /* domain name too long */
	ADDR_ERR_PATH_LENGTH,	/* address too long */
	ADDR_ERR_DOMAIN,	/* bad domain name syntax */
	ADDR_ERR_LITERAL,	/* bad address literal */
	ADDR_ERR_UTF8,		/* malformed UTF-8 */
	ADDR_ERR_NEED_SMTPUTF8, /* non-ASCII address without SMTPUTF8 */
};

/* An address: local is the unquoted local part ("john doe"), domain is
 * lower-cased ("" when none; "[192.0.2.1]" / "[IPv6:2001:db8::1]" for
 * literals). Both empty with ADDR_F_NULL. */
struct addr {
	struct buf local;
	struct buf domain;
	int flags;
};

void addr_init(struct addr *a);
void addr_free(struct addr *a);
void addr_reset(struct addr *a);
const char *addr_strerror(enum addr_status st);

/* Parse "<path>[ params]"; *rest (if non-NULL) points at the ESMTP
 * parameters with leading spaces skipped. On error, err gets a message
 * naming the problem and the code is returned. */
enum addr_status addr_parse_path(struct addr *a, const char *arg, int flags, const char **rest,
				 struct buf *err);
/* Parse a bare mailbox "local@domain" (tables, config, headers already unwrapped). */
enum addr_status addr_parse_mailbox(struct addr *a, const char *s, int flags, struct buf *err);

/* Output forms (appended to out): "<local@domain>" with the local part
 * quoted when it is not a dot-atom, and "local@domain" unquoted, as
 * Postfix uses for table lookups and logs. The null address is "<>" / "". */
void addr_format_smtp(const struct addr *a, struct buf *out);
void addr_format_plain(const struct addr *a, struct buf *out);
void addr_local_quote(const char *local, struct buf *out);

/* Add "@domain" when the address has none ($myorigin / $mydomain). */
void addr_qualify(struct addr *a, const char *domain);

/* Split the local part at the first recipient_delimiter character:
 * "user+ext" -> user "user", ext "ext", returns the delimiter (0: no split).
 * As Postfix, postmaster and MAILER-DAEMON are never split, nor is an
 * empty user ("+foo"), nor owner-xxx / xxx-request with delimiter '-'. */
int addr_split_ext(const char *local, const char *delims, struct buf *user, struct buf *ext);

/* Domain checks. addr_domain_check() validates hostname syntax (LDH labels
 * <= 63, total <= 255, no leading/trailing hyphen; '_' accepted as Postfix
 * does for real-world names; a numeric last label is refused because it
 * is an IP address, not a name). utf8 allows U-labels (SMTPUTF8). */
enum addr_status addr_domain_check(const char *name, int utf8, struct buf *err);
int addr_domain_is_fqdn(const char *name); /* has a dot, as reject_non_fqdn_* */
/* "[1.2.3.4]" or "[IPv6:...]": 1 if valid (and *ip set when non-NULL). */
int addr_literal_parse(const char *lit, struct inet_addr *ip);
/* Valid UTF-8 (no overlongs, surrogates or > U+10FFFF)? */
int addr_utf8_valid(const char *s, size_t len);

#endif
