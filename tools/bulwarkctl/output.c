/* output.c: bulwarkctl's output formatting: aligned tables, cells from JSON values, pretty JSON,
 * local-time rendering of RFC 3339 times, and scrubbing of server-supplied text. */
#include <stdlib.h>
#include <string.h>

#include "bwctl.h"
#include "output.h"

struct bwctl_table {
	int ncols;
	char **headers;
	char ***rows;
	size_t nrows;
	size_t cap;
};

struct bwctl_table *bwctl_table_new(int ncols, const char *const *headers)
{
	struct bwctl_table *t = bwctl_xmalloc(sizeof *t);

	memset(t, 0, sizeof *t);
	t->ncols = ncols;
	t->headers = bwctl_xmalloc(sizeof *t->headers * (size_t)ncols);
	for (int i = 0; i < ncols; i++)
		t->headers[i] = bwctl_xstrdup(headers[i]);
	return t;
}

void bwctl_table_add_owned(struct bwctl_table *t, char **cells)
{
	char **row = bwctl_xmalloc(sizeof *row * (size_t)t->ncols);

	if (t->nrows == t->cap) {
		t->cap = t->cap ? 2 * t->cap : 16;
		t->rows = bwctl_xrealloc(t->rows, sizeof *t->rows * t->cap);
	}
	memcpy(row, cells, sizeof *row * (size_t)t->ncols);
	t->rows[t->nrows++] = row;
}

/* Columns on screen: UTF-8 code points, a fair approximation for names and messages. */
static size_t display_width(const char *s)
{
	size_t n = 0;

	for (; *s; s++)
		if (((unsigned char)*s & 0xC0) != 0x80)
			n++;
	return n;
}

static void print_row(char *const *cells, const size_t *widths, int ncols, FILE *out)
{
	for (int i = 0; i < ncols; i++) {
		fputs(cells[i], out);
		if (i + 1 < ncols) {
			size_t pad = widths[i] - display_width(cells[i]) + 2;

			while (pad--)
				fputc(' ', out);
		}
	}
	fputc('\n', out);
}

void bwctl_table_print(const struct bwctl_table *t, FILE *out)
{
	size_t *widths = bwctl_xmalloc(sizeof *widths * (size_t)t->ncols);

	for (int i = 0; i < t->ncols; i++) {
		widths[i] = display_width(t->headers[i]);
		for (size_t r = 0; r < t->nrows; r++) {
			size_t w = display_width(t->rows[r][i]);

			if (w > widths[i])
				widths[i] = w;
		}
	}
	print_row(t->headers, widths, t->ncols, out);
	for (size_t r = 0; r < t->nrows; r++)
		print_row(t->rows[r], widths, t->ncols, out);
	free(widths);
}

void bwctl_table_free(struct bwctl_table *t)
{
	if (!t)
		return;
	for (int i = 0; i < t->ncols; i++)
		free(t->headers[i]);
	free(t->headers);
	for (size_t r = 0; r < t->nrows; r++) {
		for (int i = 0; i < t->ncols; i++)
			free(t->rows[r][i]);
		free(t->rows[r]);
	}
	free(t->rows);
	free(t);
}

static char *value_text(const json_t *v, const char *if_null)
{
	char *s;

	switch (v ? json_typeof(v) : JSON_NULL) {
	case JSON_STRING:
		if (json_string_length(v) == 0)
			return bwctl_xstrdup(if_null);
		s = bwctl_xstrdup(json_string_value(v));
		break;
	case JSON_INTEGER:
		return bwctl_xasprintf("%" JSON_INTEGER_FORMAT, json_integer_value(v));
	case JSON_REAL:
		return bwctl_xasprintf("%g", json_real_value(v));
	case JSON_TRUE:
		return bwctl_xstrdup("yes");
	case JSON_FALSE:
		return bwctl_xstrdup("no");
	case JSON_ARRAY: {
		size_t i, len = 0;
		json_t *item;

		if (json_array_size(v) == 0)
			return bwctl_xstrdup(if_null);
		s = bwctl_xstrdup("");
		json_array_foreach(v, i, item)
		{
			char *t = value_text(item, "-");
			size_t tl = strlen(t);

			s = bwctl_xrealloc(s, len + tl + 2);
			if (i)
				s[len++] = ',';
			memcpy(s + len, t, tl + 1);
			len += tl;
			free(t);
		}
		break;
	}
	case JSON_OBJECT:
		s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
		if (!s)
			return bwctl_xstrdup("?");
		break;
	case JSON_NULL:
	default:
		return bwctl_xstrdup(if_null);
	}
	bwctl_sanitize(s);
	return s;
}

char *bwctl_cell(const json_t *obj, const char *key, const char *if_null)
{
	return value_text(json_object_get(obj, key), if_null);
}

char *bwctl_cell_time(const json_t *obj, const char *key, const char *if_null)
{
	const json_t *v = json_object_get(obj, key);
	char buf[64];

	if (!json_is_string(v) || json_string_length(v) == 0)
		return value_text(v, if_null);
	bwctl_format_time(json_string_value(v), false, buf, sizeof buf);
	return bwctl_xstrdup(buf);
}

void bwctl_print_json(const json_t *value)
{
	json_dumpf(value, stdout, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_ENCODE_ANY);
	fputc('\n', stdout);
}

static int digits(const char *p, int n)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		v = v * 10 + (p[i] - '0');
	}
	return v;
}

bool bwctl_parse_rfc3339(const char *s, time_t *out)
{
	struct tm tm = {0};
	int year, mon, day, hour, min, sec, offset = 0;
	const char *p;
	time_t t;

	if (strlen(s) < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
	    s[13] != ':' || s[16] != ':')
		return false;
	year = digits(s, 4);
	mon = digits(s + 5, 2);
	day = digits(s + 8, 2);
	hour = digits(s + 11, 2);
	min = digits(s + 14, 2);
	sec = digits(s + 17, 2);
	if (year < 0 || mon < 1 || mon > 12 || day < 1 || day > 31 || hour < 0 || hour > 23 || min < 0 || min > 59 ||
	    sec < 0 || sec > 60)
		return false;
	p = s + 19;
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9')
			return false;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int oh = digits(p + 1, 2), om = -1;

		if (oh >= 0 && p[3] == ':')
			om = digits(p + 4, 2);
		if (oh < 0 || oh > 23 || om < 0 || om > 59)
			return false;
		offset = (oh * 60 + om) * 60 * (*p == '-' ? -1 : 1);
		p += 6;
	} else {
		return false;
	}
	if (*p)
		return false;
	tm.tm_year = year - 1900;
	tm.tm_mon = mon - 1;
	tm.tm_mday = day;
	tm.tm_hour = hour;
	tm.tm_min = min;
	tm.tm_sec = sec;
	t = timegm(&tm);
	if (t == (time_t)-1)
		return false;
	*out = t - offset;
	return true;
}

void bwctl_format_time(const char *rfc3339, bool with_zone, char *buf, size_t size)
{
	struct tm tm;
	time_t t;

	if (!bwctl_parse_rfc3339(rfc3339, &t) || !localtime_r(&t, &tm) ||
	    strftime(buf, size, with_zone ? "%Y-%m-%d %H:%M %Z" : "%Y-%m-%d %H:%M", &tm) == 0) {
		snprintf(buf, size, "%s", rfc3339);
		bwctl_sanitize(buf);
	}
}

void bwctl_format_duration(long long seconds, char *buf, size_t size)
{
	if (seconds < 0)
		seconds = 0;
	if (seconds >= 86400)
		snprintf(buf, size, "%lldd %lldh %lldm", seconds / 86400, seconds % 86400 / 3600, seconds % 3600 / 60);
	else if (seconds >= 3600)
		snprintf(buf, size, "%lldh %lldm", seconds / 3600, seconds % 3600 / 60);
	else if (seconds >= 60)
		snprintf(buf, size, "%lldm %llds", seconds / 60, seconds % 60);
	else
		snprintf(buf, size, "%llds", seconds);
}

void bwctl_sanitize(char *s)
{
	for (unsigned char *p = (unsigned char *)s; *p; p++) {
		if (*p < 0x20 || *p == 0x7f) {
			*p = '?';
		} else if (*p == 0xC2 && p[1] >= 0x80 && p[1] <= 0x9F) {
			/* U+0080..U+009F: C1 controls, which some terminals obey like escapes. */
			p[0] = '?';
			p[1] = '?';
			p++;
		}
	}
}
