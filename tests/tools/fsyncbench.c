/* fsyncbench.c - the machine's durable-write limit, for "make bench".
 *
 *   fsyncbench [-s record_bytes] [-b records_per_sync] [-t seconds] FILE
 *
 * Appends records of record_bytes (default 5120) to FILE (created,
 * truncated, removed at the end) for about the given seconds (default 3):
 * each round is one write() of records_per_sync records (default 1)
 * followed by one fdatasync(), which is what a queue that appends and
 * group-commits does per batch. Appending (not overwriting) matters: the
 * growing file size is part of what fdatasync must make durable, as in
 * Tern's segments. When the file reaches 256 MiB it is truncated to 0 and
 * appending starts over (rare; keeps the disk use bounded).
 *
 * Prints one JSON object to stdout: rounds (write+fdatasync pairs),
 * records, bytes, seconds, syncs_per_s, records_per_s, MiB_per_s and the
 * fdatasync latency (p50/p99/max, microseconds). Exit 0, 1 on an I/O
 * error, 64 on usage errors.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FSB_USAGE 64
#define FSB_WRAP (256L * 1024 * 1024)

static double fsb_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int fsb_cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static long fsb_arg(const char *s, long min, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *s == '\0' || *end != '\0' || v < min || v > max) {
		fprintf(stderr, "fsyncbench: bad number: %s\n", s);
		exit(FSB_USAGE);
	}
	return v;
}

static int fsb_write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int main(int argc, char **argv)
{
	long rec = 5120, batch = 1, secs = 3;
	size_t chunk, nlat = 0, cap = 4096, i;
	double *lat, t0, t1, now, elapsed;
	long rounds = 0, off = 0;
	char *buf;
	int fd, c;

	while ((c = getopt(argc, argv, "s:b:t:")) != -1) {
		switch (c) {
		case 's':
			rec = fsb_arg(optarg, 1, 16L * 1024 * 1024);
			break;
		case 'b':
			batch = fsb_arg(optarg, 1, 10000);
			break;
		case 't':
			secs = fsb_arg(optarg, 1, 3600);
			break;
		default:
			fprintf(stderr,
				"usage: fsyncbench [-s bytes] [-b records] [-t seconds] FILE\n");
			return FSB_USAGE;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "usage: fsyncbench [-s bytes] [-b records] [-t seconds] FILE\n");
		return FSB_USAGE;
	}
	chunk = (size_t)rec * (size_t)batch;
	buf = malloc(chunk);
	lat = malloc(cap * sizeof(*lat));
	if (buf == NULL || lat == NULL) {
		fprintf(stderr, "fsyncbench: out of memory\n");
		return 1;
	}
	/* Not all zeros, not trivially compressible either. */
	for (i = 0; i < chunk; i++)
		buf[i] = (char)('A' + (i * 7919 + i / 61) % 26);

	fd = open(argv[optind], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		fprintf(stderr, "fsyncbench: %s: %s\n", argv[optind], strerror(errno));
		return 1;
	}
	/* The file's name durable first, as a new queue segment's would be. */
	if (fsync(fd) < 0) {
		fprintf(stderr, "fsyncbench: fsync: %s\n", strerror(errno));
		return 1;
	}

	t0 = fsb_now();
	do {
		if (off + (long)chunk > FSB_WRAP) {
			if (ftruncate(fd, 0) < 0 || lseek(fd, 0, SEEK_SET) < 0 ||
			    fdatasync(fd) < 0) {
				fprintf(stderr, "fsyncbench: truncate: %s\n", strerror(errno));
				return 1;
			}
			off = 0;
		}
		if (fsb_write_all(fd, buf, chunk) < 0) {
			fprintf(stderr, "fsyncbench: write: %s\n", strerror(errno));
			return 1;
		}
		off += (long)chunk;
		t1 = fsb_now();
		if (fdatasync(fd) < 0) {
			fprintf(stderr, "fsyncbench: fdatasync: %s\n", strerror(errno));
			return 1;
		}
		now = fsb_now();
		if (nlat == cap) {
			double *n = realloc(lat, 2 * cap * sizeof(*lat));

			if (n == NULL) {
				fprintf(stderr, "fsyncbench: out of memory\n");
				return 1;
			}
			lat = n;
			cap *= 2;
		}
		lat[nlat++] = now - t1;
		rounds++;
	} while (now - t0 < (double)secs);
	elapsed = now - t0;
	close(fd);
	unlink(argv[optind]);

	qsort(lat, nlat, sizeof(*lat), fsb_cmp);
	printf("{\"record_bytes\": %ld, \"records_per_sync\": %ld, \"rounds\": %ld, "
	       "\"records\": %ld, \"bytes\": %ld, \"seconds\": %.3f, "
	       "\"syncs_per_s\": %.1f, \"records_per_s\": %.1f, \"MiB_per_s\": %.2f, "
	       "\"fdatasync_us_p50\": %.0f, \"fdatasync_us_p99\": %.0f, "
	       "\"fdatasync_us_max\": %.0f}\n",
	       rec, batch, rounds, rounds * batch, rounds * batch * rec, elapsed,
	       (double)rounds / elapsed, (double)(rounds * batch) / elapsed,
	       (double)(rounds * batch * rec) / elapsed / (1024.0 * 1024.0), lat[nlat / 2] * 1e6,
	       lat[(nlat * 99) / 100] * 1e6, lat[nlat - 1] * 1e6);
	free(lat);
	free(buf);
	return 0;
}
