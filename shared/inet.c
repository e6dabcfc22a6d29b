/* inet.c - numeric IPv4/IPv6 addresses and prefixes (see inet.h).
 *
 * inet_pton() is the parser on purpose: it is strict in exactly the way
 * Postfix's cidr tables are (they use it too), so "01.2.3.4" or
 * "1.2.3" never match anything.
 */
#include "inet.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/un.h>

static const unsigned char inet_v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

int inet_addr_bits(const struct inet_addr *a)
{
	return a->family == AF_INET ? 32 : 128;
}

int inet_addr_parse(const char *text, struct inet_addr *a)
{
	memset(a, 0, sizeof(*a));
	if (strchr(text, ':') != NULL) {
		if (inet_pton(AF_INET6, text, a->bytes) != 1)
			return -1;
		a->family = AF_INET6;
		return 0;
	}
	if (inet_pton(AF_INET, text, a->bytes) != 1)
		return -1;
	a->family = AF_INET;
	return 0;
}

void inet_addr_format(const struct inet_addr *a, struct buf *out)
{
	char text[INET6_ADDRSTRLEN];

	if (a->family == AF_INET) { /* glibc formats IPv4 with sprintf */
		for (int i = 0; i < 4; i++) {
			if (i)
				buf_putc(out, '.');
			buf_put_ll(out, a->bytes[i]);
		}
		return;
	}
	if (inet_ntop(a->family, a->bytes, text, sizeof(text)) == NULL)
		text[0] = 0; /* cannot happen for a parsed address */
	buf_puts(out, text);
}

int inet_addr_unmap(struct inet_addr *a)
{
	if (a->family != AF_INET6 || memcmp(a->bytes, inet_v4mapped_prefix, 12) != 0)
		return 0;
	memmove(a->bytes, a->bytes + 12, 4);
	memset(a->bytes + 4, 0, 12);
	a->family = AF_INET;
	return 1;
}

/* "/len": all digits (Postfix accepts "/024"), at most the address size. */
static int inet_prefix_parse_len(const char *text, const char *slash, int bits, int *len,
				 struct buf *why)
{
	const char *cp = slash + 1;
	long n = 0;

	if (*cp == 0)
		goto bad_value;
	for (; *cp; cp++) {
		if (!isdigit((unsigned char)*cp))
			goto bad_value;
		if (n <= bits)
			n = n * 10 + (*cp - '0');
	}
	if (n > bits) {
		buf_printf(why, "bad mask length in \"%s\"", text);
		return -1;
	}
	*len = (int)n;
	return 0;
bad_value:
	buf_printf(why, "bad mask value in \"%s\"", text);
	return -1;
}

/* Remove the optional brackets of "[addr]/len", "[addr/len]", "[addr]". */
static int inet_prefix_unbracket(const char *text, struct buf *out, struct buf *why)
{
	const char *close;

	buf_reset(out);
	if (text[0] != '[') {
		buf_puts(out, text);
		return 0;
	}
	if ((close = strchr(text, ']')) == NULL) {
		buf_printf(why, "missing ']' character after \"%s\"", text);
		return -1;
	}
	if (close[1] != 0 && close[1] != '/') {
		buf_printf(why, "bad address pattern: \"%s\"", text);
		return -1;
	}
	buf_append(out, text + 1, (size_t)(close - text - 1));
	buf_puts(out, close + 1);
	return 0;
}

int inet_prefix_parse(const char *text, struct inet_addr *net, int *len, struct buf *why)
{
	struct buf plain = BUF_INIT;
	char *slash;
	int rc = -1;

	if (inet_prefix_unbracket(text, &plain, why) < 0)
		goto out;
	if ((slash = strchr(plain.data, '/')) != NULL)
		*slash = 0;
	if (inet_addr_parse(plain.data, net) < 0) {
		buf_printf(why, "bad address pattern: \"%s\"", text);
		goto out;
	}
	*len = inet_addr_bits(net);
	if (slash && inet_prefix_parse_len(text, slash, inet_addr_bits(net), len, why) < 0)
		goto out;
	rc = 0;
out:
	buf_free(&plain);
	return rc;
}

/* Byte i of the netmask for a len-bit prefix. */
static unsigned char inet_mask_byte(int len, int i)
{
	int bits = len - 8 * i;

	if (bits >= 8)
		return 0xff;
	if (bits <= 0)
		return 0;
	return (unsigned char)(0xff << (8 - bits));
}

int inet_prefix_host_bits(const struct inet_addr *net, int len)
{
	for (int i = 0; i < inet_addr_bits(net) / 8; i++)
		if (net->bytes[i] & ~inet_mask_byte(len, i))
			return 1;
	return 0;
}

void inet_prefix_mask(struct inet_addr *net, int len)
{
	for (int i = 0; i < inet_addr_bits(net) / 8; i++)
		net->bytes[i] &= inet_mask_byte(len, i);
}

int inet_prefix_match(const struct inet_addr *net, int len, const struct inet_addr *a)
{
	if (net->family != a->family)
		return 0;
	for (int i = 0; i < inet_addr_bits(a) / 8; i++)
		if ((a->bytes[i] ^ net->bytes[i]) & inet_mask_byte(len, i))
			return 0;
	return 1;
}

int inet_addr_text_truncate(struct buf *addr)
{
	int delim = strchr(buf_str(addr), ':') ? ':' : '.';
	char *cut = strrchr(buf_str(addr), delim);

	if (cut == NULL)
		return 0;
	buf_truncate(addr, (size_t)(cut - addr->data));
	return 1;
}

int inet_endpoint_sockaddr(const char *ep, struct sockaddr_storage *ss, socklen_t *len,
			   struct buf *why)
{
	struct addrinfo hints, *res = NULL;
	char *host, *port;
	int rc;

	memset(ss, 0, sizeof(*ss));
	if (strncmp(ep, "unix:", 5) == 0 || strncmp(ep, "local:", 6) == 0) {
		struct sockaddr_un *un = (struct sockaddr_un *)ss;
		const char *path = strchr(ep, ':') + 1;
		if (strlen(path) >= sizeof(un->sun_path)) {
			buf_printf(why, "socket path too long: %s", path);
			return -1;
		}
		un->sun_family = AF_UNIX;
		strcpy(un->sun_path, path);
		*len = sizeof(*un);
		return 0;
	}
	host = xstrdup(ep + 5);
	port = strrchr(host, ':');
	*port++ = 0;
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = 0;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	if ((rc = getaddrinfo(host, port, &hints, &res)) != 0 || res == NULL) {
		buf_printf(why, "%s: %s", ep, gai_strerror(rc));
		free(host);
		return -1;
	}
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	free(host);
	return 0;
}
