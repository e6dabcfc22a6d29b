/* smtpd_milter_msg.c - the message as milters see and edit it: a list of
 * header fields (our Received: among them, hidden) and the body. Edits
 * use Postfix's index rules (cleanup_milter.c, measured against Sendmail
 * 8.13): CHGHEADER counts only visible headers of that name in the live
 * list, so after deleting "X #1" the old "X #2" is "#1" (OpenDKIM #148);
 * INSHEADER counts every header including our Received:.
 */
#include "smtpd_milter_int.h"

#include <string.h>
#include <strings.h>

static struct milter_hdr *msg_slot(struct milter_msg *m, size_t at)
{
	if (m->nh == m->cap) {
		m->cap = m->cap ? m->cap * 2 : 16;
		m->h = xrealloc(m->h, m->cap * sizeof(*m->h));
	}
	memmove(m->h + at + 1, m->h + at, (m->nh - at) * sizeof(*m->h));
	m->nh++;
	memset(&m->h[at], 0, sizeof(m->h[at]));
	return &m->h[at];
}

/* A header field starts with printable non-space characters and a colon. */
static size_t msg_name_len(const char *p, size_t n)
{
	size_t i = 0;

	while (i < n && p[i] != ':' && p[i] > ' ' && p[i] < 0x7f)
		i++;
	return i > 0 && i < n && p[i] == ':' ? i : 0;
}

void milter_msg_parse(struct milter_msg *m, const char *text, size_t len, size_t hidden)
{
	const char *p = text, *end = text + len;

	memset(m, 0, sizeof(*m));
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *eol = nl ? nl : end;
		size_t nlen = msg_name_len(p, (size_t)(eol - p));
		struct milter_hdr *h;
		struct buf v = BUF_INIT;

		if (eol == p) { /* the empty line: the body follows */
			p = nl ? nl + 1 : end;
			break;
		}
		if (nlen == 0)
			break; /* not a header: the body starts here */
		h = msg_slot(m, m->nh);
		h->name = xstrndup(p, nlen);
		h->hidden = m->nh - 1 == hidden;
		buf_append(&v, p + nlen + 1, (size_t)(eol - (p + nlen + 1)));
		p = nl ? nl + 1 : end;
		while (p < end && (*p == ' ' || *p == '\t')) { /* folded: '\n' kept */
			nl = memchr(p, '\n', (size_t)(end - p));
			eol = nl ? nl : end;
			buf_putc(&v, '\n');
			buf_append(&v, p, (size_t)(eol - p));
			p = nl ? nl + 1 : end;
		}
		h->value = buf_detach(&v);
	}
	buf_append(&m->body, p, (size_t)(end - p));
}

void milter_msg_format(const struct milter_msg *m, struct buf *out)
{
	for (size_t i = 0; i < m->nh; i++)
		buf_printf(out, "%s:%s\n", m->h[i].name, m->h[i].value);
	buf_putc(out, '\n');
	buf_append(out, m->body.data ? m->body.data : "", m->body.len);
}

void milter_msg_free(struct milter_msg *m)
{
	for (size_t i = 0; i < m->nh; i++) {
		free(m->h[i].name);
		free(m->h[i].value);
	}
	free(m->h);
	buf_free(&m->body);
	memset(m, 0, sizeof(*m));
}

/* Milters fold with "\n\t" (or "\r\n\t"); we store '\n' only. */
static char *msg_value(const char *value)
{
	struct buf v = BUF_INIT;

	buf_set(&v, "");
	for (const char *p = value; *p; p++)
		if (!(*p == '\r' && p[1] == '\n'))
			buf_putc(&v, *p);
	return buf_detach(&v);
}

static void msg_put(struct milter_msg *m, size_t at, const char *name, const char *value)
{
	struct milter_hdr *h = msg_slot(m, at);

	h->name = xstrdup(name);
	h->value = msg_value(value);
}

void milter_msg_add(struct milter_msg *m, const char *name, const char *value)
{
	msg_put(m, m->nh, name, value);
}

void milter_msg_insert(struct milter_msg *m, uint32_t idx, const char *name, const char *value)
{
	msg_put(m, idx > m->nh ? m->nh : idx, name, value);
}

void milter_msg_change(struct milter_msg *m, uint32_t idx, const char *name, const char *value)
{
	uint32_t seen = 0;

	if (idx == 0) /* Sendmail and Postfix: 0 is the first one */
		idx = 1;
	for (size_t i = 0; i < m->nh; i++) {
		struct milter_hdr *h = &m->h[i];
		if (h->hidden || strcasecmp(h->name, name) != 0 || ++seen != idx)
			continue;
		if (*value == 0) { /* empty value: delete */
			free(h->name);
			free(h->value);
			memmove(h, h + 1, (m->nh - i - 1) * sizeof(*h));
			m->nh--;
		} else {
			free(h->value);
			h->value = msg_value(value);
		}
		return;
	}
	if (*value) /* no such instance: added (libmilter documentation) */
		milter_msg_add(m, name, value);
}

void milter_msg_body_crlf(const struct milter_msg *m, struct buf *out)
{
	const char *p = m->body.data, *end = p + m->body.len, *nl;

	buf_reserve(out, m->body.len + m->body.len / 32 + 2);
	for (; p && p < end; p = nl + 1) {
		if ((nl = memchr(p, '\n', (size_t)(end - p))) == NULL) {
			buf_append(out, p, (size_t)(end - p));
			break;
		}
		buf_append(out, p, (size_t)(nl - p));
		buf_append(out, "\r\n", 2);
	}
}

void milter_msg_set_body(struct milter_msg *m, const char *crlf, size_t len)
{
	const char *p = crlf, *end = crlf + len;

	buf_reset(&m->body);
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *eol = nl ? nl : end;
		size_t n = (size_t)(eol - p);
		if (nl && n > 0 && p[n - 1] == '\r') /* CRLF -> LF; a bare CR stays */
			n--;
		buf_append(&m->body, p, n);
		buf_putc(&m->body, '\n'); /* a last line without LF gets one */
		p = nl ? nl + 1 : end;
	}
}
