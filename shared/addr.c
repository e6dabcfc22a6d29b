/* addr.c - RFC 5321 path/mailbox parsing and canonical addresses (see addr.h).
 *
 * Grammar: RFC 5321 §4.1.2 (Path, Mailbox, Dot-string, Quoted-string,
 * address literals §4.1.3), extended by RFC 6531 §3.3 for SMTPUTF8.
 * Leniency follows Postfix with strict_rfc821_envelopes=no: spaces after
 * the colon, bare addresses (flag), "a..b" local parts (re-quoted on
 * output), no 64-octet local-part limit unless ADDR_PARSE_STRICT.
 */
#include "addr.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

/* Lenient bound on a whole path: Postfix's line_length_limit (2048). */
#define ADDR_PATH_LENIENT_MAX 2048

static const char *addr_errors[] = {
    [ADDR_OK] = "ok",
    [ADDR_ERR_SYNTAX] = "bad address syntax",
    [ADDR_ERR_LOCAL_LENGTH] = "local part too long",
    [ADDR_ERR_DOMAIN_LENGTH] = "domain name too long",
    [ADDR_ERR_PATH_LENGTH] = "address too long",
    [ADDR_ERR_DOMAIN] = "bad domain name syntax",
    [ADDR_ERR_LITERAL] = "bad address literal",
    [ADDR_ERR_UTF8] = "malformed UTF-8 in address",
    [ADDR_ERR_NEED_SMTPUTF8] = "non-ASCII address without SMTPUTF8",
};

const char *addr_strerror(enum addr_status st)
{
	if ((unsigned)st >= sizeof(addr_errors) / sizeof(addr_errors[0]))
		return "unknown address error";
	return addr_errors[st];
}

/* addr_fail - set err to "<generic text>: <detail>" and return st */
static enum addr_status addr_fail(struct buf *err, enum addr_status st, const char *detail)
{
	if (err != NULL) {
		buf_reset(err);
		if (detail != NULL)
			buf_printf(err, "%s: %s", addr_strerror(st), detail);
		else
			buf_puts(err, addr_strerror(st));
	}
	return st;
}

void addr_init(struct addr *a)
{
	buf_init(&a->local);
	buf_init(&a->domain);
	a->flags = 0;
}

void addr_free(struct addr *a)
{
	buf_free(&a->local);
	buf_free(&a->domain);
	a->flags = 0;
}

void addr_reset(struct addr *a)
{
	buf_reset(&a->local);
	buf_reset(&a->domain);
	a->flags = 0;
}

int addr_utf8_valid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + len;

	while (p < end) {
		unsigned c = *p++;
		unsigned need, min, cp;

		if (c < 0x80)
			continue;
		if (c >= 0xc2 && c <= 0xdf)
			need = 1, min = 0x80, cp = c & 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			need = 2, min = 0x800, cp = c & 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			need = 3, min = 0x10000, cp = c & 0x07;
		else
			return 0;
		if ((size_t)(end - p) < need)
			return 0;
		for (; need > 0; need--, p++) {
			if ((*p & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (*p & 0x3f);
		}
		/* Overlong forms, UTF-16 surrogates and beyond Unicode (RFC 3629 §3). */
		if (cp < min || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
			return 0;
	}
	return 1;
}

/* RFC 5321 atext (RFC 5322 §3.2.3), plus UTF-8 bytes (RFC 6531 §3.3). */
static int addr_is_atext(unsigned char c)
{
	return isalnum(c) || (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL) || c >= 0x80;
}

static int addr_is_dot_atom(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || s[0] == '.' || s[len - 1] == '.')
		return 0;
	for (i = 0; i < len; i++) {
		if (s[i] == '.' ? s[i + 1] == '.' : !addr_is_atext((unsigned char)s[i]))
			return 0;
	}
	return 1;
}

/* addr_check_8bit - non-ASCII needs SMTPUTF8 and must be valid UTF-8 */
static enum addr_status addr_check_8bit(const char *s, size_t len, int utf8, int *seen,
					struct buf *err)
{
	size_t i;

	for (i = 0; i < len; i++)
		if ((unsigned char)s[i] >= 0x80)
			break;
	if (i == len)
		return ADDR_OK;
	*seen = 1;
	if (!utf8)
		return addr_fail(err, ADDR_ERR_NEED_SMTPUTF8, NULL);
	if (!addr_utf8_valid(s, len))
		return addr_fail(err, ADDR_ERR_UTF8, NULL);
	return ADDR_OK;
}

static enum addr_status addr_label_check(const char *l, size_t len, int utf8, struct buf *err)
{
	size_t i;

	if (len == 0)
		return addr_fail(err, ADDR_ERR_DOMAIN, "empty label");
	if (len > ADDR_LABEL_MAX)
		return addr_fail(err, ADDR_ERR_DOMAIN, "label longer than 63 characters");
	if (l[0] == '-' || l[len - 1] == '-')
		return addr_fail(err, ADDR_ERR_DOMAIN, "label starts or ends with '-'");
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)l[i];

		if (isalnum(c) || c == '-' || c == '_' || (utf8 && c >= 0x80))
			continue;
		if (c < 0x20 || c == 0x7f)
			return addr_fail(err, ADDR_ERR_DOMAIN, "control character");
		return addr_fail(err, ADDR_ERR_DOMAIN, "invalid character");
	}
	return ADDR_OK;
}

enum addr_status addr_domain_check(const char *name, int utf8, struct buf *err)
{
	size_t len = strlen(name), start = 0, i;
	int seen = 0, numeric = 1;
	enum addr_status st;

	if (len == 0)
		return addr_fail(err, ADDR_ERR_DOMAIN, "empty domain name");
	if (len > ADDR_DOMAIN_MAX)
		return addr_fail(err, ADDR_ERR_DOMAIN_LENGTH, NULL);
	if ((st = addr_check_8bit(name, len, utf8, &seen, err)) != ADDR_OK)
		return st;
	for (i = 0; i <= len; i++) {
		if (name[i] != '.' && name[i] != 0)
			continue;
		if ((st = addr_label_check(name + start, i - start, utf8, err)) != ADDR_OK)
			return st;
		numeric = strspn(name + start, "0123456789") == i - start;
		start = i + 1;
	}
	/* An all-numeric last label is never a domain (RFC 3696 §2): this
	 * refuses "1.2.3.4" like Postfix's "numeric hostname", and also
	 * "foo.123", which Postfix's valid_hostname() lets through. */
	if (numeric)
		return addr_fail(err, ADDR_ERR_DOMAIN, "numeric top-level label");
	return ADDR_OK;
}

int addr_domain_is_fqdn(const char *name)
{
	const char *dot = strchr(name, '.');

	/* reject_non_fqdn_*: "example" fails, "example.com" and "[1.2.3.4]" pass. */
	if (name[0] == '[')
		return 1;
	return dot != NULL && dot != name && dot[1] != 0;
}

int addr_literal_parse(const char *lit, struct inet_addr *ip)
{
	size_t len = strlen(lit);
	struct inet_addr tmp;
	char inner[64];
	int fam = AF_INET;
	size_t skip = 1;

	if (len < 3 || lit[0] != '[' || lit[len - 1] != ']')
		return 0;
	if (len > 6 && strncasecmp(lit + 1, "IPv6:", 5) == 0)
		fam = AF_INET6, skip = 6;
	/* The longest IPv6 text form is 45 octets; anything longer is junk. */
	if (len - skip - 1 >= sizeof(inner))
		return 0;
	memcpy(inner, lit + skip, len - skip - 1);
	inner[len - skip - 1] = 0;
	/* RFC 5321 §4.1.3: IPv6 only with the "IPv6:" tag, IPv4 only without. */
	if (inet_addr_parse(inner, &tmp) < 0 || tmp.family != fam)
		return 0;
	if (ip != NULL)
		*ip = tmp;
	return 1;
}

/* addr_domain_set - validate the domain part and store its canonical form */
static enum addr_status addr_domain_set(struct addr *a, const char *d, size_t len, int flags,
					struct buf *err)
{
	enum addr_status st = ADDR_OK;
	struct inet_addr ip;

	buf_reset(&a->domain);
	buf_append(&a->domain, d, len);
	if (len > 0 && d[0] == '[') {
		if (!addr_literal_parse(buf_str(&a->domain), &ip))
			return addr_fail(err, ADDR_ERR_LITERAL, NULL);
		buf_lower(&a->domain);
		if (ip.family == AF_INET6)
			memcpy(a->domain.data + 1, "IPv6", 4); /* RFC 5321 §4.1.3 tag spelling */
		a->flags |= ADDR_F_LITERAL;
		return ADDR_OK;
	}
	if (memchr(d, '[', len) != NULL || memchr(d, ']', len) != NULL)
		return addr_fail(err, ADDR_ERR_LITERAL, NULL);
	st = addr_domain_check(buf_str(&a->domain), flags & ADDR_PARSE_SMTPUTF8, err);
	if (st == ADDR_OK && strlen(buf_str(&a->domain)) != len)
		st = addr_fail(err, ADDR_ERR_SYNTAX, "NUL in domain");
	buf_lower(&a->domain);
	return st;
}

/* addr_local_quoted - decode a Quoted-string; *pos is after the opening '"' */
static enum addr_status addr_local_quoted(struct addr *a, const char *s, size_t len, size_t *pos,
					  struct buf *err)
{
	size_t i = *pos;

	for (; i < len && s[i] != '"'; i++) {
		unsigned char c = (unsigned char)s[i];

		/* quoted-pairSMTP = "\" %d32-126 (RFC 5321 §4.1.2) */
		if (c == '\\') {
			if (++i >= len)
				break;
			c = (unsigned char)s[i];
			if (c < 32 || c > 126)
				return addr_fail(err, ADDR_ERR_SYNTAX, "bad quoted pair");
		} else if (c < 32 || c == 127) {
			return addr_fail(err, ADDR_ERR_SYNTAX, "control character");
		}
		buf_putc(&a->local, c);
	}
	if (i >= len)
		return addr_fail(err, ADDR_ERR_SYNTAX, "unterminated quoted string");
	*pos = i + 1;
	return ADDR_OK;
}

/* addr_local_dotstring - an unquoted local part; *pos ends at '@' or len */
static enum addr_status addr_local_dotstring(struct addr *a, const char *s, size_t len, size_t *pos,
					     int flags, struct buf *err)
{
	size_t i = *pos;

	for (; i < len && s[i] != '@'; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 32 || c == 127)
			return addr_fail(err, ADDR_ERR_SYNTAX, "control character");
		if (c != '.' && !addr_is_atext(c))
			return addr_fail(err, ADDR_ERR_SYNTAX, "invalid character in local part");
	}
	if (i == *pos)
		return addr_fail(err, ADDR_ERR_SYNTAX, "empty local part");
	/* "a..b" and ".a" are not Dot-strings; Postfix accepts them and
	 * quotes them on output, so only strict mode refuses them. */
	if ((flags & ADDR_PARSE_STRICT) && !addr_is_dot_atom(s + *pos, i - *pos))
		return addr_fail(err, ADDR_ERR_SYNTAX, "misplaced '.' in local part");
	buf_append(&a->local, s + *pos, i - *pos);
	*pos = i;
	return ADDR_OK;
}

static enum addr_status addr_mailbox_parse(struct addr *a, const char *s, size_t len, int flags,
					   struct buf *err)
{
	size_t pos = 0, llen;
	int seen = 0;
	enum addr_status st;

	st = (len > 0 && s[0] == '"') ? (pos = 1, addr_local_quoted(a, s, len, &pos, err))
				      : addr_local_dotstring(a, s, len, &pos, flags, err);
	if (st != ADDR_OK)
		return st;
	llen = a->local.len;
	if (llen > ((flags & ADDR_PARSE_STRICT) ? ADDR_LOCAL_MAX : ADDR_LOCAL_LENIENT_MAX))
		return addr_fail(err, ADDR_ERR_LOCAL_LENGTH, NULL);
	st = addr_check_8bit(buf_str(&a->local), llen, flags & ADDR_PARSE_SMTPUTF8, &seen, err);
	if (st != ADDR_OK)
		return st;
	if (pos == len) {
		if (flags & ADDR_PARSE_NEED_DOMAIN)
			return addr_fail(err, ADDR_ERR_SYNTAX, "missing domain");
	} else if (s[pos] != '@') {
		return addr_fail(err, ADDR_ERR_SYNTAX, "junk after quoted local part");
	} else if (pos + 1 == len) {
		return addr_fail(err, ADDR_ERR_SYNTAX, "empty domain after '@'");
	} else if ((st = addr_domain_set(a, s + pos + 1, len - pos - 1, flags, err)) != ADDR_OK) {
		return st;
	}
	for (pos = 0; pos < a->domain.len; pos++)
		seen |= (unsigned char)a->domain.data[pos] >= 0x80;
	if (seen)
		a->flags |= ADDR_F_UTF8;
	return ADDR_OK;
}

/* addr_route_skip - RFC 5321 §4.1.2 A-d-l "@a,@b:" (obsolete; §C says
 * accept and ignore). *skip gets the offset after ':'. */
static enum addr_status addr_route_skip(const char *s, size_t len, int flags, size_t *skip,
					struct buf *err)
{
	const char *colon = memchr(s, ':', len);
	size_t i = 0, j;
	struct buf dom = BUF_INIT;
	enum addr_status st = ADDR_ERR_SYNTAX;

	if (colon == NULL)
		goto out;
	while (i < (size_t)(colon - s)) {
		if (s[i] != '@') {
			st = ADDR_ERR_SYNTAX;
			goto out;
		}
		for (j = i + 1; s + j < colon && s[j] != ','; j++)
			;
		buf_reset(&dom);
		buf_append(&dom, s + i + 1, j - i - 1);
		if ((st = addr_domain_check(buf_str(&dom), flags & ADDR_PARSE_SMTPUTF8, err)) !=
		    ADDR_OK)
			goto out;
		i = (s + j < colon) ? j + 1 : j;
	}
	st = ADDR_OK;
out:
	buf_free(&dom);
	if (st == ADDR_ERR_SYNTAX)
		addr_fail(err, st, "bad source route");
	if (st == ADDR_OK)
		*skip = (size_t)(colon - s) + 1;
	return st;
}

/* addr_path_end - length of the path text: through the '>' matching the
 * leading '<', or (bare) up to the first unquoted space. */
static size_t addr_path_end(const char *s, int bracket)
{
	size_t i = bracket ? 1 : 0;
	int quoted = 0;

	for (; s[i] != 0; i++) {
		if (quoted && s[i] == '\\' && s[i + 1] != 0)
			i++;
		else if (s[i] == '"')
			quoted = !quoted;
		else if (!quoted && bracket && s[i] == '>')
			return i + 1;
		else if (!quoted && !bracket && (s[i] == ' ' || s[i] == '\t'))
			return i;
	}
	return bracket ? 0 : i;
}

/* addr_path_inner - locate the mailbox inside "<...>" or a bare address */
static enum addr_status addr_path_inner(const char *p, int flags, const char **inner, size_t *ilen,
					const char **after, struct buf *err)
{
	size_t end;

	if (*p == '<') {
		if ((end = addr_path_end(p, 1)) == 0)
			return addr_fail(err, ADDR_ERR_SYNTAX, "unbalanced '<'");
		if (p[end] != 0 && p[end] != ' ' &&
		    !(p[end] == '\t' && !(flags & ADDR_PARSE_STRICT)))
			return addr_fail(err, ADDR_ERR_SYNTAX, "junk after '>'");
		*inner = p + 1, *ilen = end - 2;
	} else if (flags & ADDR_PARSE_ALLOW_BARE) {
		end = addr_path_end(p, 0);
		*inner = p, *ilen = end;
		if (end == 0)
			return addr_fail(err, ADDR_ERR_SYNTAX, "empty address");
	} else {
		return addr_fail(err, ADDR_ERR_SYNTAX, "address not enclosed in <>");
	}
	*after = p + end;
	return ADDR_OK;
}

enum addr_status addr_parse_path(struct addr *a, const char *arg, int flags, const char **rest,
				 struct buf *err)
{
	const char *p = arg, *inner, *after;
	size_t ilen, skip;
	enum addr_status st;

	addr_reset(a);
	if (!(flags & ADDR_PARSE_STRICT))
		p += strspn(p, " \t");
	if ((st = addr_path_inner(p, flags, &inner, &ilen, &after, err)) != ADDR_OK)
		goto fail;
	if (ilen + 2 > ((flags & ADDR_PARSE_STRICT) ? ADDR_PATH_MAX : ADDR_PATH_LENIENT_MAX)) {
		st = addr_fail(err, ADDR_ERR_PATH_LENGTH, NULL);
		goto fail;
	}
	if (ilen == 0 && *p == '<') {
		a->flags |= ADDR_F_NULL;
	} else {
		if (inner[0] == '@') {
			if ((st = addr_route_skip(inner, ilen, flags, &skip, err)) != ADDR_OK)
				goto fail;
			a->flags |= ADDR_F_ROUTE;
			inner += skip, ilen -= skip;
		}
		if ((st = addr_mailbox_parse(a, inner, ilen, flags, err)) != ADDR_OK)
			goto fail;
	}
	if (rest != NULL)
		*rest = after + strspn(after, " \t");
	return ADDR_OK;
fail:
	if (st == ADDR_ERR_SYNTAX && err != NULL && err->len == 0)
		addr_fail(err, st, NULL);
	addr_reset(a);
	return st;
}

enum addr_status addr_parse_mailbox(struct addr *a, const char *s, int flags, struct buf *err)
{
	size_t len = strlen(s);
	enum addr_status st;

	addr_reset(a);
	if (len > ADDR_PATH_LENIENT_MAX)
		st = addr_fail(err, ADDR_ERR_PATH_LENGTH, NULL);
	else
		st = addr_mailbox_parse(a, s, len, flags, err);
	if (st != ADDR_OK)
		addr_reset(a);
	return st;
}

void addr_local_quote(const char *local, struct buf *out)
{
	const char *p;

	if (addr_is_dot_atom(local, strlen(local))) {
		buf_puts(out, local);
		return;
	}
	buf_putc(out, '"');
	for (p = local; *p != 0; p++) {
		if (*p == '"' || *p == '\\')
			buf_putc(out, '\\');
		buf_putc(out, *p);
	}
	buf_putc(out, '"');
}

void addr_format_smtp(const struct addr *a, struct buf *out)
{
	buf_putc(out, '<');
	if (!(a->flags & ADDR_F_NULL)) {
		addr_local_quote(buf_str(&a->local), out);
		if (a->domain.len > 0) {
			buf_putc(out, '@');
			buf_puts(out, buf_str(&a->domain));
		}
	}
	buf_putc(out, '>');
}

void addr_format_plain(const struct addr *a, struct buf *out)
{
	if (a->flags & ADDR_F_NULL)
		return;
	buf_puts(out, buf_str(&a->local));
	if (a->domain.len > 0) {
		buf_putc(out, '@');
		buf_puts(out, buf_str(&a->domain));
	}
}

void addr_qualify(struct addr *a, const char *domain)
{
	if ((a->flags & ADDR_F_NULL) || a->domain.len > 0 || domain == NULL || *domain == 0)
		return;
	buf_set(&a->domain, domain);
	buf_lower(&a->domain);
	if (domain[0] == '[')
		a->flags |= ADDR_F_LITERAL;
}

int addr_split_ext(const char *local, const char *delims, struct buf *user, struct buf *ext)
{
	size_t len = strlen(local), n;

	buf_set(user, local);
	buf_reset(ext);
	if (delims == NULL || *delims == 0)
		return 0;
	/* Postfix's split_addr(): reserved names are never split, and with
	 * '-' as delimiter neither are mailing-list owner/request aliases. */
	if (strcasecmp(local, "postmaster") == 0 || strcasecmp(local, "MAILER-DAEMON") == 0)
		return 0;
	if (strchr(delims, '-') != NULL &&
	    (strncasecmp(local, "owner-", 6) == 0 ||
	     (len > 8 && strcasecmp(local + len - 8, "-request") == 0)))
		return 0;
	n = strcspn(local, delims);
	if (n == 0 || n == len)
		return 0;
	buf_truncate(user, n);
	buf_puts(ext, local + n + 1);
	return (unsigned char)local[n];
}
