/* dnsq.c - query DNS through shared/resolver.c, for integration tests.
 *
 *   dnsq [-s "addr@port ..."] [-a] [-t secs] TYPE NAME
 * TYPE is A, AAAA, MX, PTR (NAME may be an IP address), TXT, or VERIFY
 * (forward-confirmed client name of the IP address NAME). Records go to
 * stdout one per line ("10 mx.example.com" for MX); -a uses the async API
 * on a libevent loop. Exit: 0 found, 1 NXDOMAIN, 2 no data, 3 null MX,
 * 4 temporary failure, 5 permanent failure, 64 usage.
 */
#include "buf.h"
#include "resolver.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DNSQ_USAGE 64

static const int dnsq_exit[] = {
    [RESOLVER_FOUND] = 0,  [RESOLVER_NXDOMAIN] = 1, [RESOLVER_NODATA] = 2,
    [RESOLVER_NULLMX] = 3, [RESOLVER_TEMPFAIL] = 4, [RESOLVER_PERMFAIL] = 5,
};

static int dnsq_report(const struct resolver_result *res)
{
	struct buf line = BUF_INIT;
	size_t i;

	for (i = 0; res->status == RESOLVER_FOUND && i < res->count; i++) {
		buf_reset(&line);
		resolver_rr_format(res->qtype, &res->rr[i], &line);
		printf("%s\n", buf_str(&line));
	}
	if (res->status != RESOLVER_FOUND)
		fprintf(stderr, "dnsq: %s: %s\n", resolver_status_str(res->status),
			buf_str(&res->msg));
	buf_free(&line);
	return dnsq_exit[res->status];
}

static void dnsq_async_done(void *arg, const struct resolver_result *res)
{
	*(int *)arg = dnsq_report(res);
}

static int dnsq_async(struct resolver *r, struct event_base *base, const char *name, int qtype)
{
	struct buf err = BUF_INIT;
	int status = -1;

	if (resolver_query(r, name, qtype, dnsq_async_done, &status, &err) < 0) {
		fprintf(stderr, "dnsq: %s\n", buf_str(&err));
		status = 4;
	} else {
		/* The loop returns once the resolver has nothing pending. */
		event_base_dispatch(base);
		if (status < 0) {
			fprintf(stderr, "dnsq: event loop ended without an answer\n");
			status = 4;
		}
	}
	buf_free(&err);
	return status;
}

static int dnsq_verify(struct resolver *r, const char *ip)
{
	struct buf name = BUF_INIT, err = BUF_INIT;
	enum resolver_status st = resolver_verify_client(r, ip, &name, &err);

	if (st == RESOLVER_FOUND)
		printf("%s\n", buf_str(&name));
	else
		fprintf(stderr, "dnsq: %s: %s\n", resolver_status_str(st), buf_str(&err));
	buf_free(&name);
	buf_free(&err);
	return dnsq_exit[st];
}

static int dnsq_run(const char *servers, int async, int timeout, const char *type, const char *name)
{
	struct event_base *base = async ? event_base_new() : NULL;
	struct buf err = BUF_INIT, rev = BUF_INIT;
	struct resolver *r = resolver_new(servers, timeout, base, &err);
	struct resolver_result res;
	int qtype = resolver_type_code(type), status = DNSQ_USAGE;

	resolver_result_init(&res);
	if (r == NULL) {
		fprintf(stderr, "dnsq: %s\n", buf_str(&err));
		status = 4;
	} else if (strcasecmp(type, "VERIFY") == 0) {
		status = dnsq_verify(r, name);
	} else if (qtype == 0) {
		fprintf(stderr, "dnsq: unknown type %s\n", type);
	} else {
		if (qtype == RESOLVER_T_PTR && resolver_reverse_name(name, &rev) == 0)
			name = buf_str(&rev);
		if (async) {
			status = dnsq_async(r, base, name, qtype);
		} else {
			resolver_lookup(r, name, qtype, &res);
			status = dnsq_report(&res);
		}
	}
	resolver_result_free(&res);
	resolver_free(r);
	if (base != NULL)
		event_base_free(base);
	buf_free(&err);
	buf_free(&rev);
	return status;
}

int main(int argc, char **argv)
{
	const char *servers = NULL;
	int async = 0, timeout = 0, c;

	while ((c = getopt(argc, argv, "as:t:")) != -1) {
		switch (c) {
		case 'a':
			async = 1;
			break;
		case 's':
			servers = optarg;
			break;
		case 't':
			timeout = atoi(optarg);
			break;
		default:
			goto usage;
		}
	}
	if (argc - optind != 2)
		goto usage;
	return dnsq_run(servers, async, timeout, argv[optind], argv[optind + 1]);
usage:
	fprintf(stderr, "usage: dnsq [-s servers] [-a] [-t timeout] TYPE NAME\n");
	return DNSQ_USAGE;
}
