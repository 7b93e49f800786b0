/* schedule.c: the applied policy of a simulated device (policy.json in the state directory) and the
 * scheduled malware scans it asks for: parsing malware_scan.scheduled, the next scheduled time on a
 * (simulated) UTC clock, the event data of a scheduled scan, and `bulwark-agent policy`, which
 * prints the applied policy. */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "agent.h"

#define MAX_POLICY_FILE (4u * 1024 * 1024)

static const char *const day_names[7] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

/* A weekday from "mon", "Monday", "MON"...: its tm_wday, or -1. */
static int parse_day(const char *s)
{
	size_t n = strlen(s);

	if (n < 3)
		return -1;
	for (int i = 0; i < 7; i++) {
		static const char *const full[7] = {"sunday",   "monday", "tuesday", "wednesday",
		                                    "thursday", "friday", "saturday"};

		if ((n == 3 && strncasecmp(s, day_names[i], 3) == 0) || strcasecmp(s, full[i]) == 0)
			return i;
	}
	return -1;
}

static bool parse_hhmm(const char *s, int *minute)
{
	if (!s || strlen(s) != 5 || !isdigit((unsigned char)s[0]) || !isdigit((unsigned char)s[1]) || s[2] != ':' ||
	    !isdigit((unsigned char)s[3]) || !isdigit((unsigned char)s[4]))
		return false;
	int h = (s[0] - '0') * 10 + (s[1] - '0'), m = (s[3] - '0') * 10 + (s[4] - '0');
	if (h > 23 || m > 59)
		return false;
	*minute = h * 60 + m;
	return true;
}

int bwa_schedule_from_policy(json_t *policy, struct bwa_schedule *s, bw_error *err)
{
	json_t *sched = json_object_get(json_object_get(policy, "malware_scan"), "scheduled");
	json_t *days, *d;
	const char *freq, *scope;
	size_t i;

	memset(s, 0, sizeof *s);
	snprintf(s->scope, sizeof s->scope, "all");
	if (!sched || json_is_null(sched))
		return BW_OK;
	if (!json_is_object(sched))
		return bw_error_set(err, BW_E_INVALID, "malware_scan.scheduled is not an object");
	if (!json_is_true(json_object_get(sched, "enabled")))
		return BW_OK;
	freq = json_string_value(json_object_get(sched, "frequency"));
	if (!freq || (strcmp(freq, "daily") != 0 && strcmp(freq, "weekly") != 0))
		return bw_error_set(err, BW_E_INVALID, "malware_scan.scheduled.frequency must be daily or weekly");
	s->weekly = strcmp(freq, "weekly") == 0;
	if (!parse_hhmm(json_string_value(json_object_get(sched, "time")), &s->minute_of_day))
		return bw_error_set(err, BW_E_INVALID, "malware_scan.scheduled.time must be HH:MM (00:00 to 23:59)");
	days = json_object_get(sched, "days");
	if (days && !json_is_null(days) && !json_is_array(days))
		return bw_error_set(err, BW_E_INVALID, "malware_scan.scheduled.days must be a list of weekdays");
	json_array_foreach(days, i, d)
	{
		int wd = json_is_string(d) ? parse_day(json_string_value(d)) : -1;

		if (wd < 0)
			return bw_error_set(err, BW_E_INVALID, "malware_scan.scheduled.days[%zu] is not a weekday", i);
		s->days |= 1u << wd;
	}
	if (s->weekly && !s->days)
		return bw_error_set(err, BW_E_INVALID, "malware_scan.scheduled.days: a weekly scan needs a day");
	scope = json_string_value(json_object_get(sched, "scope"));
	if (scope)
		snprintf(s->scope, sizeof s->scope, "%s", scope);
	s->enabled = true;
	return BW_OK;
}

/* Weekday of the UTC day that starts at `day_start` (1970-01-01 was a Thursday). */
static int weekday(int64_t day_start)
{
	int64_t days = day_start / 86400;
	int wd = (int)((days + 4) % 7);

	return wd < 0 ? wd + 7 : wd;
}

int64_t bwa_schedule_next(const struct bwa_schedule *s, int64_t t)
{
	int64_t day;

	if (!s->enabled)
		return -1;
	day = t - ((t % 86400) + 86400) % 86400;
	/* Eight days: today's time may have passed, and a weekly day is at most seven days away. */
	for (int i = 0; i < 8; i++, day += 86400) {
		int64_t at = day + (int64_t)s->minute_of_day * 60;

		if (at < t)
			continue;
		if (s->days && !(s->days & (1u << weekday(day))))
			continue;
		return at;
	}
	return -1;
}

static void days_text(unsigned days, char *buf, size_t size)
{
	size_t off = 0;

	buf[0] = '\0';
	/* Monday first, as schedules are usually written. */
	for (int k = 1; k <= 7; k++) {
		int i = k % 7;

		if ((days & (1u << i)) && off < size)
			off += (size_t)snprintf(buf + off, size - off, "%s%s", off ? "," : "", day_names[i]);
	}
}

void bwa_schedule_describe(const struct bwa_schedule *s, char *buf, size_t size)
{
	char days[64];

	if (!s->enabled) {
		snprintf(buf, size, "off");
		return;
	}
	days_text(s->days, days, sizeof days);
	snprintf(buf, size, "%s%s%s at %02d:%02d UTC, scope %s", s->weekly ? "weekly" : "daily", s->days ? " on " : "",
	         s->days ? days : "", s->minute_of_day / 60, s->minute_of_day % 60, s->scope);
}

json_t *bwa_schedule_event_data(const struct bwa_schedule *s, int64_t t, const char *policy_version, size_t napps)
{
	char when[32];

	bwa_rfc3339(t, when);
	return json_pack("{s:b,s:s,s:s,s:s,s:s?,s:i,s:I}", "scheduled", 1, "at", when, "frequency",
	                 s->weekly ? "weekly" : "daily", "scope", s->scope, "policy_version", policy_version, "threats",
	                 0, "scanned_apps", (json_int_t)napps);
}

void bwa_rfc3339(int64_t t, char out[32])
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (!gmtime_r(&tt, &tm) || !strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(out, 32, "%lld", (long long)t);
}

static int digits(const char *p, int n)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)p[i]))
			return -1;
		v = v * 10 + (p[i] - '0');
	}
	return v;
}

bool bwa_parse_time(const char *s, int64_t *out)
{
	struct tm tm = {0};
	int64_t offset = 0;
	const char *p;
	long v;

	if (bwa_parse_long(s, 0, 253402300799L, &v)) {
		*out = v;
		return true;
	}
	if (strlen(s) < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' ||
	    s[16] != ':')
		return false;
	tm.tm_year = digits(s, 4) - 1900;
	tm.tm_mon = digits(s + 5, 2) - 1;
	tm.tm_mday = digits(s + 8, 2);
	tm.tm_hour = digits(s + 11, 2);
	tm.tm_min = digits(s + 14, 2);
	tm.tm_sec = digits(s + 17, 2);
	if (tm.tm_year < 0 || tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour < 0 ||
	    tm.tm_hour > 23 || tm.tm_min < 0 || tm.tm_min > 59 || tm.tm_sec < 0 || tm.tm_sec > 60)
		return false;
	p = s + 19;
	if (*p == '.')
		for (p++; isdigit((unsigned char)*p); p++)
			;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
		int oh = digits(p + 1, 2), om = digits(p + 4, 2);

		if (oh < 0 || oh > 23 || om < 0 || om > 59)
			return false;
		offset = (int64_t)(oh * 60 + om) * 60 * (*p == '-' ? -1 : 1);
		p += 6;
	} else {
		return false;
	}
	if (*p)
		return false;
	*out = (int64_t)timegm(&tm) - offset;
	return true;
}

int bwa_policy_load(const char *dir, json_t **out, bw_error *err)
{
	char *path = bwa_path(dir, "policy.json");
	char *text = NULL;
	json_error_t jerr;
	int rc = bwa_read_file(path, MAX_POLICY_FILE, &text, NULL, err);

	*out = NULL;
	if (rc == BW_E_NOTFOUND) {
		free(path);
		return BW_OK;
	}
	if (rc != BW_OK) {
		free(path);
		return rc;
	}
	*out = json_loads(text, 0, &jerr);
	free(text);
	if (!json_is_object(*out)) {
		json_decref(*out);
		*out = NULL;
		rc = bw_error_set(err, BW_E_INVALID, "%s is not a JSON object (%s)", path, jerr.text);
		free(path);
		return rc;
	}
	free(path);
	return BW_OK;
}

int bwa_policy_read_file(const char *path, json_t **out, bw_error *err)
{
	char *text = NULL;
	json_error_t jerr;
	json_t *root, *inner;
	int rc = bwa_read_file(path, MAX_POLICY_FILE, &text, NULL, err);

	*out = NULL;
	if (rc != BW_OK)
		return rc;
	root = json_loads(text, 0, &jerr);
	free(text);
	if (!json_is_object(root)) {
		json_decref(root);
		return bw_error_set(err, BW_E_INVALID, "%s:%d: %s", path, jerr.line,
		                    root ? "not a JSON object" : jerr.text);
	}
	inner = json_object_get(root, "policy");
	*out = json_is_object(inner) ? json_incref(inner) : json_incref(root);
	json_decref(root);
	return BW_OK;
}

/* ---- bulwark-agent policy */

int bwa_cmd_policy(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"state", required_argument, NULL, 's'},
	    {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *dir = NULL;
	bool json = false;
	json_t *pol = NULL;
	struct bwa_schedule sched;
	bw_error err = {0};
	char desc[600];
	int c;

	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			dir = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 'h':
			printf("usage: bulwark-agent policy --state DIR [--json]\n");
			return BWA_EXIT_OK;
		case ':':
			return bwa_fail(BWA_EXIT_USAGE, "policy: option %s needs a value", argv[optind - 1]);
		default:
			return bwa_fail(BWA_EXIT_USAGE, "policy: unknown option %s", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return bwa_fail(BWA_EXIT_USAGE, "policy: unexpected argument %s", argv[optind]);
	if (!dir)
		return bwa_fail(BWA_EXIT_USAGE, "policy: --state DIR is required");
	if (!bwa_state_exists(dir))
		return bwa_fail(BWA_EXIT_USAGE,
		                "%s holds no enrolled device (no device.json); run bulwark-agent enroll first", dir);
	if (bwa_policy_load(dir, &pol, &err) != BW_OK)
		return bwa_fail(BWA_EXIT_FAIL, "policy: %s", err.message);
	if (!pol)
		return bwa_fail(BWA_EXIT_FAIL, "policy: %s: no policy applied yet (bulwark-agent run fetches it)", dir);
	if (json) {
		json_dumpf(pol, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
		putchar('\n');
		json_decref(pol);
		return BWA_EXIT_OK;
	}
	{
		const char *version = json_string_value(json_object_get(pol, "version"));
		json_t *doc = json_object_get(pol, "policy");
		char when[32];
		char *text;

		bwa_rfc3339(json_integer_value(json_object_get(pol, "fetched_at")), when);
		printf("version         %s\n", version ? version : "?");
		printf("applied         %s\n", json_is_integer(json_object_get(pol, "fetched_at")) ? when : "?");
		if (bwa_schedule_from_policy(doc, &sched, &err) != BW_OK)
			snprintf(desc, sizeof desc, "invalid: %s", err.message);
		else
			bwa_schedule_describe(&sched, desc, sizeof desc);
		printf("scheduled scan  %s\n", desc);
		/* ASCII only: control characters from the server come out escaped. */
		text = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_ENSURE_ASCII) : NULL;
		printf("policy          %s\n", text ? text : "{}");
		free(text);
	}
	json_decref(pol);
	return BWA_EXIT_OK;
}
