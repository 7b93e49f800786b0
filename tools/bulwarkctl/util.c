/* util.c: bulwarkctl's error printing and allocation helpers. */
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bwctl.h"
#include "output.h"

static void print_message(const char *prefix, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void print_message(const char *prefix, const char *fmt, va_list ap)
{
	char buf[2048];

	vsnprintf(buf, sizeof buf, fmt, ap);
	bwctl_sanitize(buf);
	fflush(stdout);
	fprintf(stderr, "bulwarkctl: %s%s\n", prefix, buf);
}

int bwctl_fail(int exit_code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	print_message("", fmt, ap);
	va_end(ap);
	return exit_code;
}

void bwctl_warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	print_message("warning: ", fmt, ap);
	va_end(ap);
}

static void out_of_memory(void)
{
	fputs("bulwarkctl: out of memory\n", stderr);
	exit(BWCTL_EXIT_FAIL);
}

void *bwctl_xmalloc(size_t size)
{
	void *p = malloc(size ? size : 1);

	if (!p)
		out_of_memory();
	return p;
}

void *bwctl_xrealloc(void *p, size_t size)
{
	void *q = realloc(p, size ? size : 1);

	if (!q)
		out_of_memory();
	return q;
}

char *bwctl_xstrdup(const char *s)
{
	char *p = strdup(s);

	if (!p)
		out_of_memory();
	return p;
}

char *bwctl_xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		out_of_memory();
	return s;
}

void bwctl_secure_free(void *p)
{
	if (!p)
		return;
	explicit_bzero(p, malloc_usable_size(p));
	free(p);
}
