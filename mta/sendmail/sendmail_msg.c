/* sendmail_msg.c - read a locally submitted message as Postfix's sendmail
 * and cleanup do: LF or CRLF line ends (sendmail_fix_line_endings =
 * always), a lone "." ends input unless -i, a leading mbox "From " line
 * is dropped; -t takes recipients from the headers and removes Bcc:;
 * Message-Id:, Date: and From: are added when missing.
 * Pitfall: input is untrusted and unbounded; the size limit applies to
 * every byte read, including a single endless line.
 */
#include "maildate.h"
#include "sendmail.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

void sm_list_add(struct sm_list *l, const char *s, size_t len)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 8;
		l->v = xrealloc(l->v, l->cap * sizeof(*l->v));
	}
	l->v[l->n++] = xstrndup(s, len);
}

void sm_list_free(struct sm_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = l->cap = 0;
}

static void sm_msg_header_add(struct sm_msg *m, const char *text, size_t len)
{
	if (m->nhdr == m->cap) {
		m->cap = m->cap ? m->cap * 2 : 16;
		m->hdr = xrealloc(m->hdr, m->cap * sizeof(*m->hdr));
	}
	/* memcpy, not strndup: a NUL in the line must not make len lie. */
	m->hdr[m->nhdr].text = xmalloc(len + 1);
	memcpy(m->hdr[m->nhdr].text, text, len);
	m->hdr[m->nhdr].text[len] = 0;
	m->hdr[m->nhdr].len = len;
	m->nhdr++;
}

static void sm_msg_header_continue(struct sm_msg *m, const char *text, size_t len)
{
	struct sm_header *h = &m->hdr[m->nhdr - 1];

	h->text = xrealloc(h->text, h->len + len + 1);
	memcpy(h->text + h->len, text, len);
	h->len += len;
	h->text[h->len] = 0;
}

void sm_msg_free(struct sm_msg *m)
{
	for (size_t i = 0; i < m->nhdr; i++)
		free(m->hdr[i].text);
	free(m->hdr);
	m->hdr = NULL;
	m->nhdr = m->cap = 0;
	m->in_body = 0;
	buf_free(&m->body);
}

/* RFC 5322 §2.2: field-name = 1*(printable US-ASCII except ":") ":". */
static int sm_is_header(const char *s, size_t len)
{
	size_t i = 0;

	while (i < len && s[i] >= 33 && s[i] <= 126 && s[i] != ':')
		i++;
	return i > 0 && i < len && s[i] == ':';
}

/* One input line into line (without its end). 1 line, 0 EOF, -1 too big. */
static int sm_read_line(FILE *in, struct buf *line, struct sm_msg *m, size_t limit)
{
	int c, got = 0;

	buf_reset(line);
	while ((c = getc(in)) != EOF) {
		got = 1;
		if (++m->size > limit && limit > 0)
			return -1;
		if (c == '\n')
			break;
		buf_putc(line, c);
	}
	if (line->len > 0 && line->data[line->len - 1] == '\r')
		buf_truncate(line, line->len - 1);
	return got;
}

void sm_msg_add_line(struct sm_msg *m, const char *line, size_t len)
{
	if (m->in_body) {
		buf_append(&m->body, line, len);
		buf_putc(&m->body, '\n');
	} else if (len == 0) {
		m->in_body = 1;
	} else if ((line[0] == ' ' || line[0] == '\t') && m->nhdr > 0) {
		sm_msg_header_continue(m, line, len);
		sm_msg_header_continue(m, "\n", 1);
	} else if (sm_is_header(line, len)) {
		sm_msg_header_add(m, line, len);
		sm_msg_header_continue(m, "\n", 1);
	} else {
		m->in_body = 1;
		buf_append(&m->body, line, len);
		buf_putc(&m->body, '\n');
	}
}

void sm_msg_prepend_header(struct sm_msg *m, const char *text, size_t len)
{
	struct sm_header h;

	sm_msg_header_add(m, text, len);
	h = m->hdr[m->nhdr - 1];
	memmove(&m->hdr[1], &m->hdr[0], (m->nhdr - 1) * sizeof(*m->hdr));
	m->hdr[0] = h;
}

int sm_msg_read(struct sm_msg *m, FILE *in, const struct sm_read_opts *o, struct buf *err)
{
	struct buf line = BUF_INIT;
	int rc, first = 1, status = 0;

	buf_init(&line);
	while ((rc = sm_read_line(in, &line, m, o->size_limit)) > 0) {
		if (o->dot_ends && line.len == 1 && line.data[0] == '.')
			break;
		/* An mbox envelope line, as Postfix's sendmail skips it. */
		if (!first || line.len < 5 || memcmp(line.data, "From ", 5) != 0)
			sm_msg_add_line(m, line.data, line.len);
		first = 0;
	}
	if (rc < 0) {
		buf_puts(err, "message file too big");
		status = SM_EX_DATAERR;
	} else if (ferror(in)) {
		buf_puts(err, "error reading input");
		status = SM_EX_TEMPFAIL;
	}
	buf_free(&line);
	return status;
}

/* Does header h have this name (case-insensitive)? */
static int sm_header_is(const struct sm_header *h, const char *name)
{
	size_t n = strlen(name);
	return h->len > n && strncasecmp(h->text, name, n) == 0 && h->text[n] == ':';
}

static int sm_msg_has(const struct sm_msg *m, const char *name)
{
	for (size_t i = 0; i < m->nhdr; i++)
		if (sm_header_is(&m->hdr[i], name))
			return 1;
	return 0;
}

/* An address list token scanner (RFC 5322 §3.4): display names,
 * comments and groups are skipped; the <angle-addr> wins over the
 * phrase; a source route "@a,@b:x@y" keeps x@y. */
struct sm_addr_scan {
	struct buf cur, ang;
	int have_angle, in_angle;
};

static void sm_addr_flush(struct sm_addr_scan *s, struct sm_list *out)
{
	struct buf *a = s->have_angle ? &s->ang : &s->cur;
	const char *p = a->data ? a->data : "";

	if (s->have_angle && *p == '@' && strchr(p, ':'))
		p = strrchr(p, ':') + 1;
	if (*p)
		sm_list_add(out, p, strlen(p));
	buf_reset(&s->cur);
	buf_reset(&s->ang);
	s->have_angle = s->in_angle = 0;
}

/* Skip a comment "( ... )" with nesting and quoted pairs; returns the
 * position after it. */
static const char *sm_skip_comment(const char *p)
{
	int depth = 0;

	for (; *p; p++) {
		if (*p == '\\' && p[1])
			p++;
		else if (*p == '(')
			depth++;
		else if (*p == ')' && --depth == 0)
			return p + 1;
	}
	return p;
}

/* Copy a quoted string (with its quotes) into dst; position after it. */
static const char *sm_copy_quoted(const char *p, struct buf *dst)
{
	buf_putc(dst, *p++);
	for (; *p && *p != '"'; p++) {
		if (*p == '\\' && p[1])
			buf_putc(dst, *p++);
		buf_putc(dst, *p);
	}
	if (*p == '"')
		buf_putc(dst, *p++);
	return p;
}

void sm_addr_list_parse(const char *value, struct sm_list *out)
{
	struct sm_addr_scan s = {BUF_INIT, BUF_INIT, 0, 0};
	const char *p = value;

	buf_init(&s.cur);
	buf_init(&s.ang);
	while (*p) {
		struct buf *dst = s.in_angle ? &s.ang : &s.cur;
		if (*p == '"') {
			p = sm_copy_quoted(p, dst);
			continue;
		}
		if (*p == '(') {
			p = sm_skip_comment(p);
			continue;
		}
		if (*p == '<' && !s.in_angle) {
			buf_reset(&s.ang);
			s.in_angle = s.have_angle = 1;
		} else if (*p == '>' && s.in_angle) {
			s.in_angle = 0;
		} else if (*p == ':' && !s.in_angle) {
			buf_reset(&s.cur); /* group name: "undisclosed-recipients:;" */
		} else if ((*p == ',' || *p == ';') && !s.in_angle) {
			sm_addr_flush(&s, out);
		} else if (!isspace((unsigned char)*p)) {
			buf_putc(dst, *p);
		}
		p++;
	}
	sm_addr_flush(&s, out);
	buf_free(&s.cur);
	buf_free(&s.ang);
}

static void sm_msg_header_drop(struct sm_msg *m, size_t i)
{
	free(m->hdr[i].text);
	memmove(&m->hdr[i], &m->hdr[i + 1], (m->nhdr - i - 1) * sizeof(*m->hdr));
	m->nhdr--;
}

/* Postfix cleanup: when any Resent- header is present, -t reads only the
 * Resent-To/Cc/Bcc headers (RFC 5322 §3.6.6). */
void sm_msg_extract_rcpt(struct sm_msg *m, struct sm_list *rcpt)
{
	static const char *const plain[] = {"To", "Cc", "Bcc"};
	static const char *const resent[] = {"Resent-To", "Resent-Cc", "Resent-Bcc"};
	const char *const *names = plain;
	struct buf value = BUF_INIT;

	for (size_t i = 0; i < m->nhdr; i++)
		if (strncasecmp(m->hdr[i].text, "Resent-", 7) == 0)
			names = resent;
	for (size_t i = 0; i < m->nhdr;) {
		int which = -1;
		for (int k = 0; k < 3; k++)
			if (sm_header_is(&m->hdr[i], names[k]))
				which = k;
		if (which < 0) {
			i++;
			continue;
		}
		buf_reset(&value);
		for (const char *p = strchr(m->hdr[i].text, ':') + 1; *p; p++)
			if (*p != '\n')
				buf_putc(&value, *p); /* unfold (RFC 5322 §2.2.3) */
		sm_addr_list_parse(buf_str(&value), rcpt);
		if (which == 2) /* Bcc must not reach the recipients */
			sm_msg_header_drop(m, i);
		else
			i++;
	}
	buf_free(&value);
}

/* A display name needs quotes when it holds RFC 5322 specials. */
static void sm_phrase(const char *name, struct buf *out)
{
	if (strpbrk(name, "()<>[]:;@\\,.\"") == NULL) {
		buf_puts(out, name);
		return;
	}
	buf_putc(out, '"');
	for (const char *p = name; *p; p++) {
		if (*p == '"' || *p == '\\')
			buf_putc(out, '\\');
		buf_putc(out, *p);
	}
	buf_putc(out, '"');
}

static void sm_msg_add_header(struct sm_msg *m, const struct buf *h)
{
	sm_msg_header_add(m, h->data, h->len);
}

void sm_msg_add_missing(struct sm_msg *m, const char *myhostname, const char *from_addr,
			const char *fullname)
{
	struct buf h = BUF_INIT;
	time_t now = time(NULL);
	unsigned char rnd[6] = {0};
	struct tm tm;
	char stamp[32];

	buf_init(&h);
	if (!sm_msg_has(m, "Message-Id")) {
		/* Postfix: YYYYMMDDHHMMSS.QUEUEID@myhostname; the queue ID is not
		 * known yet, so a random one of the same shape stands in. */
		if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
			rnd[0] ^= (unsigned char)getpid();
		gmtime_r(&now, &tm);
		strftime(stamp, sizeof(stamp), "%Y%m%d%H%M%S", &tm);
		buf_printf(&h, "Message-Id: <%s.%02X%02X%02X%02X%02X%02X@%s>\n", stamp, rnd[0],
			   rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], myhostname);
		sm_msg_add_header(m, &h);
	}
	if (!sm_msg_has(m, "Date")) {
		buf_set(&h, "Date: ");
		mail_date(now, &h);
		buf_putc(&h, '\n');
		sm_msg_add_header(m, &h);
	}
	if (!sm_msg_has(m, "From") && *from_addr) {
		/* header_from_format = standard (Postfix 3.3+): "name <addr>". */
		buf_set(&h, "From: ");
		if (fullname && *fullname) {
			sm_phrase(fullname, &h);
			buf_printf(&h, " <%s>\n", from_addr);
		} else {
			buf_printf(&h, "%s\n", from_addr);
		}
		sm_msg_add_header(m, &h);
	}
	buf_free(&h);
}

void sm_msg_format(const struct sm_msg *m, struct buf *out)
{
	for (size_t i = 0; i < m->nhdr; i++)
		buf_append(out, m->hdr[i].text, m->hdr[i].len);
	buf_putc(out, '\n');
	buf_append(out, m->body.data ? m->body.data : "", m->body.len);
}
