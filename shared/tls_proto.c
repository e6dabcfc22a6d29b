/* tls_proto.c - Postfix's TLS protocol lists as a version floor (tls_proto.h). */
#include "tls_proto.h"

#include <openssl/ssl.h>

#include <string.h>
#include <strings.h>

int tls_protocol_floor(const struct cfg_list *items, const char *param, int *min,
		       struct buf *err)
{
	static const struct {
		const char *name;
		int v;
	} vs[] = {{"SSLv3", SSL3_VERSION},    {"TLSv1", TLS1_VERSION}, {"TLSv1.1", TLS1_1_VERSION},
		  {"TLSv1.2", TLS1_2_VERSION}, {"TLSv1.3", TLS1_3_VERSION}};
	const int nvs = (int)(sizeof(vs) / sizeof(vs[0]));

	for (size_t i = 0; i < items->count; i++) {
		const char *it = items->items[i];
		int ge = strncmp(it, ">=", 2) == 0, neg = *it == '!', found = -1;
		const char *name = it + (ge ? 2 : neg ? 1 : 0);
		for (int k = 0; k < nvs; k++)
			if (strcasecmp(name, vs[k].name) == 0)
				found = k;
		if (strcasecmp(name, "SSLv2") == 0 && neg)
			continue; /* OpenSSL has none */
		if (found < 0) {
			buf_printf(err, "%s: unknown protocol \"%s\"", param, it);
			return -1;
		}
		if (ge)
			*min = vs[found].v;
		else if (neg && found + 1 < nvs && *min <= vs[found].v)
			*min = vs[found + 1].v;
	}
	return 0;
}

int tls_sni_name_valid(const char *name)
{
	size_t len = strlen(name), label = 0;

	if (len == 0 || len > 253 || strspn(name, "0123456789.") == len)
		return 0;
	for (const char *p = name; *p; p++) {
		if (*p == '.') {
			if (label == 0)
				return 0;
			label = 0;
		} else if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			     (*p >= '0' && *p <= '9') || *p == '-') ||
			   ++label > 63) {
			return 0;
		}
	}
	return label > 0;
}
