/* host/policy/policy_doc.c: validation and normalisation of the policy document, section by section, driven by
 * field tables; defaults, default completion and section-level merge. Errors name the field path and the bad
 * entry; all are collected (capped). Field reference: docs/policies.md. */
#include "policy_doc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PATH_MAX_LEN  512
#define ENTRY_MAX_LEN 200

/* ---- error collection ---- */

typedef struct vctx {
	json_t *errors;
	size_t count; /* every error, also those past the cap */
	char first[400];
} vctx;

static void entry_text(json_t *v, bool secret, char *buf, size_t len)
{
	buf[0] = '\0';
	if (!v)
		return;
	if (secret) {
		snprintf(buf, len, "(hidden)");
		return;
	}
	if (json_is_string(v)) {
		snprintf(buf, len, "%s", json_string_value(v));
	} else {
		char *d = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
		snprintf(buf, len, "%s", d ? d : "?");
		free(d);
	}
	/* cut back to a UTF-8 boundary so the text stays valid */
	size_t n = strlen(buf);
	if (n == len - 1) {
		while (n > 0 && ((unsigned char)buf[n] & 0xC0) == 0x80)
			n--;
		buf[n] = '\0';
		while (n > 0 && ((unsigned char)buf[n - 1] & 0x80)) {
			/* drop a trailing incomplete sequence */
			size_t k = n - 1;
			while (k > 0 && ((unsigned char)buf[k] & 0xC0) == 0x80)
				k--;
			unsigned char lead = (unsigned char)buf[k];
			size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
			if (n - k >= need)
				break;
			n = k;
			buf[n] = '\0';
		}
	}
}

static void add_err(vctx *c, const char *path, json_t *entry, bool secret, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void add_err(vctx *c, const char *path, json_t *entry, bool secret, const char *fmt, ...)
{
	char msg[300];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (c->count == 0)
		snprintf(c->first, sizeof c->first, "%s: %s", path[0] ? path : "(document)", msg);
	c->count++;
	if (json_array_size(c->errors) >= BW_POLICY_MAX_ERRORS)
		return;
	char ent[ENTRY_MAX_LEN + 1];
	entry_text(entry, secret, ent, sizeof ent);
	json_t *e = json_pack("{s:s, s:s, s:s}", "field", path, "entry", ent, "message", msg);
	if (e)
		json_array_append_new(c->errors, e);
}

/* Paths longer than PATH_MAX_LEN are cut; they stay unambiguous enough to find the entry. */
static void path_key(char *buf, const char *path, const char *key)
{
	int n = path[0] ? snprintf(buf, PATH_MAX_LEN, "%s.%s", path, key) : snprintf(buf, PATH_MAX_LEN, "%s", key);
	if (n < 0)
		buf[0] = '\0';
}

static void path_idx(char *buf, const char *path, size_t i)
{
	int n = snprintf(buf, PATH_MAX_LEN, "%s[%zu]", path, i);
	if (n < 0)
		buf[0] = '\0';
}

/* ---- field tables ---- */

enum kind { K_BOOL, K_INT, K_ENUM, K_STR, K_OBJ, K_LIST, K_CUSTOM };
enum { L_COLLAPSE = 1, L_UNIQUE = 2 };

typedef json_t *(*check_fn)(vctx *c, const char *path, json_t *v);
/* `in`: the object as given (for presence checks), `out`: its normalised form (invalid members left out). */
typedef void (*post_fn)(vctx *c, const char *path, json_t *in, json_t *out);

struct field {
	const char *name;
	enum kind kind;
	long long lo, hi;           /* K_INT range; K_STR byte length; K_LIST most items */
	const char *const *choices; /* K_ENUM */
	const struct field *fields; /* K_OBJ members, ended by a NULL name */
	post_fn post;               /* K_OBJ cross-field checks on the normalised object */
	check_fn check;             /* K_LIST item / K_CUSTOM value: new normalised value or NULL after an error */
	int list_flags;
	bool secret; /* never echo the value in errors */
};

static json_t *v_obj(vctx *c, const char *path, json_t *v, const struct field *fields, post_fn post, bool secret);

/* A string without NUL bytes or control characters; NULL (and an error) otherwise. */
static const char *plain_string(vctx *c, const char *path, json_t *v, bool secret)
{
	if (!json_is_string(v)) {
		add_err(c, path, v, secret, "must be a string");
		return NULL;
	}
	const char *s = json_string_value(v);
	size_t n = json_string_length(v);
	if (strlen(s) != n) {
		add_err(c, path, v, secret, "contains a NUL character");
		return NULL;
	}
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) {
			add_err(c, path, v, secret, "contains a control character");
			return NULL;
		}
	return s;
}

static json_t *v_field(vctx *c, const char *path, json_t *v, const struct field *f)
{
	switch (f->kind) {
	case K_BOOL:
		if (!json_is_boolean(v)) {
			add_err(c, path, v, false, "must be true or false");
			return NULL;
		}
		return json_incref(v);
	case K_INT:
		if (!json_is_integer(v) || json_integer_value(v) < f->lo || json_integer_value(v) > f->hi) {
			add_err(c, path, v, false, "must be an integer from %lld to %lld", f->lo, f->hi);
			return NULL;
		}
		return json_integer(json_integer_value(v));
	case K_ENUM: {
		const char *s = json_string_value(v);
		for (const char *const *ch = f->choices; s && *ch; ch++)
			if (strcmp(*ch, s) == 0)
				return json_string(s);
		char list[200] = "";
		for (const char *const *ch = f->choices; *ch; ch++)
			snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", list[0] ? ", " : "", *ch);
		add_err(c, path, v, false, "must be one of: %s", list);
		return NULL;
	}
	case K_STR: {
		const char *s = plain_string(c, path, v, f->secret);
		if (!s)
			return NULL;
		size_t n = strlen(s);
		if ((long long)n < f->lo || (long long)n > f->hi) {
			add_err(c, path, v, f->secret, "length must be %lld to %lld bytes", f->lo, f->hi);
			return NULL;
		}
		return json_string(s);
	}
	case K_OBJ:
		return v_obj(c, path, v, f->fields, f->post, f->secret);
	case K_LIST: {
		if (!json_is_array(v)) {
			add_err(c, path, v, f->secret, "must be an array");
			return NULL;
		}
		if ((long long)json_array_size(v) > f->hi) {
			/* one error for the list: validating a huge list entry by entry would only flood the output */
			add_err(c, path, NULL, false, "too many entries (%zu; at most %lld)", json_array_size(v),
			        f->hi);
			return NULL;
		}
		json_t *out = json_array();
		json_t *seen = json_object(); /* normalised string entries, for duplicates */
		size_t i;
		json_t *item;
		json_array_foreach(v, i, item)
		{
			char ip[PATH_MAX_LEN];
			path_idx(ip, path, i);
			json_t *ni = f->check(c, ip, item);
			if (!ni)
				continue;
			const char *key = json_string_value(ni);
			if (key && json_object_get(seen, key)) {
				if (f->list_flags & L_UNIQUE)
					add_err(c, ip, item, false, "duplicate entry");
				json_decref(ni); /* L_COLLAPSE: the first one stays */
				continue;
			}
			if (key)
				json_object_set_new(seen, key, json_true());
			json_array_append_new(out, ni);
		}
		json_decref(seen);
		return out;
	}
	case K_CUSTOM:
		return f->check(c, path, v);
	}
	return NULL;
}

/* `secret`: the object holds secrets, so a wrong-typed value (perhaps a password) is not echoed. */
static json_t *v_obj(vctx *c, const char *path, json_t *v, const struct field *fields, post_fn post, bool secret)
{
	if (!json_is_object(v)) {
		add_err(c, path, v, secret, "must be an object");
		return NULL;
	}
	json_t *out = json_object();
	const char *key;
	json_t *val;
	json_object_foreach(v, key, val)
	{
		char fp[PATH_MAX_LEN];
		path_key(fp, path, key);
		const struct field *f = fields;
		while (f->name && strcmp(f->name, key) != 0)
			f++;
		if (!f->name) {
			json_t *k = json_string(key);
			add_err(c, fp, k, false, path[0] ? "unknown field \"%s\"" : "unknown section \"%s\"", key);
			json_decref(k);
			continue;
		}
		json_t *nv = v_field(c, fp, val, f);
		if (nv)
			json_object_set_new(out, key, nv);
	}
	if (post)
		post(c, path, v, out);
	return out;
}

/* ---- shared value checks ---- */

static const char *const days_of_week[] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun", NULL};

static json_t *check_time(vctx *c, const char *path, json_t *v)
{
	/* "HH:MM" (or "H:MM"), 00:00-23:59; normalised to HH:MM */
	const char *s = json_string_value(v);
	size_t n = s ? strlen(s) : 0;
	bool ok = (n == 4 || n == 5) && s[n - 3] == ':';
	for (size_t i = 0; ok && i < n; i++)
		ok = i == n - 3 || (s[i] >= '0' && s[i] <= '9');
	int h = ok ? atoi(s) : -1, m = ok ? atoi(s + n - 2) : -1;
	if (!ok || h > 23 || m > 59) {
		add_err(c, path, v, false, "must be a time HH:MM from 00:00 to 23:59");
		return NULL;
	}
	char buf[32];
	snprintf(buf, sizeof buf, "%02d:%02d", h, m);
	return json_string(buf);
}

static json_t *check_day(vctx *c, const char *path, json_t *v)
{
	const char *s = json_string_value(v);
	for (int i = 0; s && days_of_week[i]; i++)
		if (strcmp(s, days_of_week[i]) == 0)
			return json_string(s);
	add_err(c, path, v, false, "must be a day: mon, tue, wed, thu, fri, sat or sun");
	return NULL;
}

/* Frequency, time and days of a schedule. `active`: the schedule will run, so it must be complete. */
static void check_schedule(vctx *c, const char *path, json_t *in, json_t *out, bool active, const char *why)
{
	char fp[PATH_MAX_LEN];
	const char *freq = json_string_value(json_object_get(out, "frequency"));
	json_t *days = json_object_get(out, "days");
	if (active) {
		static const char *const need[] = {"frequency", "time"};
		for (size_t i = 0; i < 2; i++)
			if (!json_object_get(in, need[i])) {
				path_key(fp, path, need[i]);
				add_err(c, fp, NULL, false, "required when %s", why);
			}
	}
	path_key(fp, path, "days");
	if (freq && strcmp(freq, "weekly") == 0 && json_array_size(days) == 0)
		add_err(c, fp, days, false, "a weekly schedule needs at least one day");
	if (freq && strcmp(freq, "daily") == 0 && json_array_size(days) > 0)
		add_err(c, fp, days, false,
		        "days apply only to weekly schedules (remove them or use frequency weekly)");
	/* days in week order, so equal schedules compare equal */
	if (json_is_array(days) && json_array_size(days) > 1) {
		json_t *sorted = json_array();
		for (int d = 0; days_of_week[d]; d++) {
			size_t i;
			json_t *x;
			json_array_foreach(days, i, x)
			{
				if (strcmp(json_string_value(x), days_of_week[d]) == 0)
					json_array_append(sorted, x);
			}
		}
		json_object_set_new(out, "days", sorted);
	}
}

static void post_scan_schedule(vctx *c, const char *path, json_t *in, json_t *out)
{
	check_schedule(c, path, in, out, json_is_true(json_object_get(out, "enabled")), "scheduled scans are enabled");
}

static void post_update_schedule(vctx *c, const char *path, json_t *in, json_t *out)
{
	const char *mode = json_string_value(json_object_get(out, "mode"));
	check_schedule(c, path, in, out, mode && strcmp(mode, "scheduled") == 0, "mode is scheduled");
}

static json_t *check_url(vctx *c, const char *path, json_t *v)
{
	const char *s = plain_string(c, path, v, false);
	if (!s)
		return NULL;
	char why[200], *norm = NULL;
	if (bw_policy_url_normalize(s, &norm, why, sizeof why) != BW_OK) {
		add_err(c, path, v, false, "%s", why);
		return NULL;
	}
	json_t *r = json_string(norm);
	free(norm);
	return r;
}

static json_t *check_phone_common(vctx *c, const char *path, json_t *v, bool alnum)
{
	const char *s = plain_string(c, path, v, false);
	if (!s)
		return NULL;
	char why[200], *norm = NULL;
	if (bw_policy_phone_normalize(s, alnum, &norm, why, sizeof why) != BW_OK) {
		add_err(c, path, v, false, "%s", why);
		return NULL;
	}
	json_t *r = json_string(norm);
	free(norm);
	return r;
}

static json_t *check_sender(vctx *c, const char *path, json_t *v)
{
	return check_phone_common(c, path, v, true);
}

static json_t *check_number(vctx *c, const char *path, json_t *v)
{
	return check_phone_common(c, path, v, false);
}

static json_t *check_package(vctx *c, const char *path, json_t *v)
{
	const char *s = plain_string(c, path, v, false);
	if (!s)
		return NULL;
	char why[200];
	if (!bw_policy_package_id_valid(s, why, sizeof why)) {
		add_err(c, path, v, false, "%s", why);
		return NULL;
	}
	return json_string(s);
}

/* Counts UTF-8 code points. */
static size_t utf8_chars(const char *s)
{
	size_t n = 0;
	for (; *s; s++)
		n += ((unsigned char)*s & 0xC0) != 0x80;
	return n;
}

static json_t *check_uninstall_password(vctx *c, const char *path, json_t *v)
{
	const char *s = plain_string(c, path, v, true);
	if (!s)
		return NULL;
	size_t n = utf8_chars(s);
	if (n < 4 || n > 64) {
		add_err(c, path, v, true, "must be 4 to 64 characters");
		return NULL;
	}
	return json_string(s);
}

/* Quiet normalisers for cross-list checks (errors were already reported by the list itself). */
static char *norm_url_quiet(const char *s)
{
	char why[8], *out = NULL;
	return bw_policy_url_normalize(s, &out, why, sizeof why) == BW_OK ? out : NULL;
}

static char *norm_pkg_quiet(const char *s)
{
	char why[8];
	return bw_policy_package_id_valid(s, why, sizeof why) ? strdup(s) : NULL;
}

/* An entry in both lists of a pair is a contradiction: reported on the second list's entry as given. */
static void check_conflict(vctx *c, const char *path, json_t *in, json_t *out, const char *a, const char *b,
                           char *(*norm)(const char *))
{
	json_t *la = json_object_get(out, a), *lb = json_object_get(in, b);
	if (!json_array_size(la) || !json_is_array(lb) || !json_array_size(lb))
		return;
	json_t *set = json_object();
	size_t i;
	json_t *x;
	json_array_foreach(la, i, x)
	{
		json_object_set_new(set, json_string_value(x), json_true());
	}
	json_array_foreach(lb, i, x)
	{
		char *nx = json_is_string(x) ? norm(json_string_value(x)) : NULL;
		if (nx && json_object_get(set, nx)) {
			char fp[PATH_MAX_LEN], ip[PATH_MAX_LEN];
			path_key(fp, path, b);
			path_idx(ip, fp, i);
			add_err(c, ip, x, false, "also in the %s list", a);
		}
		free(nx);
	}
	json_decref(set);
}

/* ---- sections ---- */

static const char *const freq_choices[] = {"daily", "weekly", NULL};

static const struct field f_scan_schedule[] = {
    {.name = "enabled", .kind = K_BOOL},
    {.name = "frequency", .kind = K_ENUM, .choices = freq_choices},
    {.name = "time", .kind = K_CUSTOM, .check = check_time},
    {.name = "days", .kind = K_LIST, .hi = 7, .check = check_day, .list_flags = L_UNIQUE},
    {.name = "scope", .kind = K_ENUM, .choices = (const char *const[]){"all", "apps_only", "storage", NULL}},
    {0}};

static const struct field f_malware_scan[] = {
    {.name = "realtime", .kind = K_BOOL},
    {.name = "scheduled", .kind = K_OBJ, .fields = f_scan_schedule, .post = post_scan_schedule},
    {0}};

static void post_web_platform(vctx *c, const char *path, json_t *in, json_t *out)
{
	check_conflict(c, path, in, out, "block", "allow", norm_url_quiet);
}

static const struct field f_web_list[] = {
    {.name = "block", .kind = K_LIST, .hi = 5000, .check = check_url, .list_flags = L_COLLAPSE},
    {.name = "allow", .kind = K_LIST, .hi = 5000, .check = check_url, .list_flags = L_COLLAPSE},
    {0}};

static const struct field f_web_lists[] = {
    {.name = "android", .kind = K_OBJ, .fields = f_web_list, .post = post_web_platform},
    {.name = "ios", .kind = K_OBJ, .fields = f_web_list, .post = post_web_platform},
    {0}};

static const struct field f_web_protection[] = {
    {.name = "enabled", .kind = K_BOOL},
    {.name = "level", .kind = K_ENUM, .choices = (const char *const[]){"low", "medium", "high", NULL}},
    {.name = "lists", .kind = K_OBJ, .fields = f_web_lists},
    {0}};

static const char *const filter_modes[] = {"block_list", "allow_list", NULL};

static const struct field f_sms_filter[] = {
    {.name = "enabled", .kind = K_BOOL},
    {.name = "mode", .kind = K_ENUM, .choices = filter_modes},
    {.name = "senders", .kind = K_LIST, .hi = 1000, .check = check_sender, .list_flags = L_COLLAPSE},
    {0}};

static const struct field f_call_filter[] = {
    {.name = "enabled", .kind = K_BOOL},
    {.name = "mode", .kind = K_ENUM, .choices = filter_modes},
    {.name = "numbers", .kind = K_LIST, .hi = 1000, .check = check_number, .list_flags = L_COLLAPSE},
    {.name = "block_unknown", .kind = K_BOOL},
    {0}};

static const struct field f_complexity[] = {{.name = "lower", .kind = K_BOOL},
                                            {.name = "upper", .kind = K_BOOL},
                                            {.name = "digit", .kind = K_BOOL},
                                            {.name = "symbol", .kind = K_BOOL},
                                            {0}};

#define DEFAULT_MIN_LENGTH          6
#define DEFAULT_MAX_FAILED_ATTEMPTS 10

static void post_password(vctx *c, const char *path, json_t *in, json_t *out)
{
	(void)in;
	json_t *ml = json_object_get(out, "min_length");
	long long min_len = ml ? json_integer_value(ml) : DEFAULT_MIN_LENGTH;
	json_t *cx = json_object_get(out, "complexity");
	long long classes = 0;
	const char *key;
	json_t *val;
	json_object_foreach(cx, key, val)
	{
		classes += json_is_true(val);
	}
	char fp[PATH_MAX_LEN];
	if (classes > min_len) {
		path_key(fp, path, "complexity");
		add_err(c, fp, cx, false, "%lld required character classes do not fit in min_length %lld", classes,
		        min_len);
	}
	json_t *mc = json_object_get(out, "min_classes");
	if (mc && json_integer_value(mc) > min_len) {
		path_key(fp, path, "min_classes");
		add_err(c, fp, mc, false, "min_classes %lld is more than min_length %lld", json_integer_value(mc),
		        min_len);
	}
	const char *action = json_string_value(json_object_get(out, "failed_action"));
	json_t *mfa = json_object_get(out, "max_failed_attempts");
	if (action && strcmp(action, "wipe") == 0 && mfa && json_integer_value(mfa) == 0) {
		path_key(fp, path, "max_failed_attempts");
		add_err(c, fp, mfa, false, "failed_action wipe needs max_failed_attempts of 1 or more (0 = unlimited)");
	}
}

static const struct field f_password[] = {
    {.name = "required", .kind = K_BOOL},
    {.name = "min_length", .kind = K_INT, .lo = 4, .hi = 64},
    {.name = "complexity", .kind = K_OBJ, .fields = f_complexity},
    {.name = "min_classes", .kind = K_INT, .lo = 0, .hi = 4},
    {.name = "max_failed_attempts", .kind = K_INT, .lo = 0, .hi = 100},
    {.name = "failed_action", .kind = K_ENUM, .choices = (const char *const[]){"lock", "wipe", NULL}},
    {.name = "auto_lock_minutes", .kind = K_INT, .lo = 0, .hi = 1440},
    {.name = "history", .kind = K_INT, .lo = 0, .hi = 50},
    {0}};

static void post_uninstall(vctx *c, const char *path, json_t *in, json_t *out)
{
	if (json_is_true(json_object_get(out, "enabled")) && !json_object_get(in, "password") &&
	    !json_is_true(json_object_get(out, "password_set"))) {
		char fp[PATH_MAX_LEN];
		path_key(fp, path, "password");
		add_err(
		    c, fp, NULL, false,
		    "required when uninstall protection is enabled (or \"password_set\": true to keep the stored one)");
	}
}

static const struct field f_uninstall[] = {
    {.name = "enabled", .kind = K_BOOL},
    {.name = "password", .kind = K_CUSTOM, .check = check_uninstall_password, .secret = true},
    {.name = "password_set", .kind = K_BOOL},
    {0}};

static json_t *check_feature_items(vctx *c, const char *path, json_t *v)
{
	if (!json_is_object(v)) {
		add_err(c, path, v, false, "must be an object of feature id: \"block\" or \"allow\"");
		return NULL;
	}
	json_t *out = json_object();
	const char *key;
	json_t *val;
	json_object_foreach(v, key, val)
	{
		char fp[PATH_MAX_LEN];
		path_key(fp, path, key);
		if (!bw_policy_feature_known(key)) {
			json_t *k = json_string(key);
			add_err(c, fp, k, false, "unknown feature \"%s\" (see GET /api/v1/policies/catalog)", key);
			json_decref(k);
			continue;
		}
		const char *s = json_string_value(val);
		if (!s || (strcmp(s, "block") != 0 && strcmp(s, "allow") != 0)) {
			add_err(c, fp, val, false, "must be \"block\" or \"allow\"");
			continue;
		}
		json_object_set_new(out, key, json_string(s));
	}
	return out;
}

static const struct field f_feature_lock[] = {{.name = "items", .kind = K_CUSTOM, .check = check_feature_items}, {0}};

static json_t *check_ssid(vctx *c, const char *path, json_t *v)
{
	const char *s = plain_string(c, path, v, false);
	if (!s)
		return NULL;
	if (strlen(s) < 1 || strlen(s) > 32) {
		add_err(c, path, v, false, "SSID must be 1 to 32 bytes");
		return NULL;
	}
	return json_string(s);
}

static void post_eap(vctx *c, const char *path, json_t *in, json_t *out)
{
	const char *method = json_string_value(json_object_get(out, "method"));
	char fp[PATH_MAX_LEN];
	if (!json_object_get(in, "method")) {
		path_key(fp, path, "method");
		add_err(c, fp, NULL, false, "required (peap, ttls or tls)");
	}
	if (!json_object_get(in, "identity")) {
		path_key(fp, path, "identity");
		add_err(c, fp, NULL, false, "required");
	}
	bool has_pw = json_object_get(in, "password") || json_is_true(json_object_get(out, "password_set"));
	path_key(fp, path, "password");
	if (method && strcmp(method, "tls") == 0 && json_object_get(in, "password"))
		add_err(c, fp, NULL, false, "EAP-TLS authenticates with a client certificate, not a password");
	else if (method && strcmp(method, "tls") != 0 && !has_pw)
		add_err(c, fp, NULL, false, "required for EAP-%s (or \"password_set\": true to keep the stored one)",
		        strcmp(method, "peap") == 0 ? "PEAP" : "TTLS");
}

static const struct field f_eap[] = {
    {.name = "method", .kind = K_ENUM, .choices = (const char *const[]){"peap", "ttls", "tls", NULL}},
    {.name = "identity", .kind = K_STR, .lo = 1, .hi = 256},
    {.name = "anonymous_identity", .kind = K_STR, .lo = 0, .hi = 256},
    {.name = "password", .kind = K_STR, .lo = 1, .hi = 256, .secret = true},
    {.name = "password_set", .kind = K_BOOL},
    {0}};

static bool wpa_passphrase_valid(const char *p)
{
	size_t n = strlen(p);
	if (n == 64)
		return strspn(p, "0123456789abcdefABCDEF") == 64;
	if (n < 8 || n > 63)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] < 0x20 || (unsigned char)p[i] > 0x7e)
			return false;
	return true;
}

static void post_network(vctx *c, const char *path, json_t *in, json_t *out)
{
	const char *sec = json_string_value(json_object_get(out, "security"));
	json_t *pw = json_object_get(out, "password");
	bool pw_set = json_is_true(json_object_get(out, "password_set"));
	json_t *eap = json_object_get(in, "eap");
	char fp[PATH_MAX_LEN];
	if (!json_object_get(in, "ssid")) {
		path_key(fp, path, "ssid");
		add_err(c, fp, NULL, false, "required");
	}
	if (!sec) {
		if (json_object_get(in, "security"))
			return; /* already reported as invalid */
		path_key(fp, path, "security");
		add_err(c, fp, NULL, false,
		        "required (open, wpa2_personal, wpa3_personal, wpa2_enterprise, wpa3_enterprise)");
		return;
	}
	bool personal = strstr(sec, "_personal") != NULL, enterprise = strstr(sec, "_enterprise") != NULL;
	path_key(fp, path, "password");
	if (personal) {
		if (pw && !wpa_passphrase_valid(json_string_value(pw)))
			add_err(c, fp, pw, true, "must be 8 to 63 printable ASCII characters or 64 hex digits");
		else if (!json_object_get(in, "password") && !pw_set)
			add_err(c, fp, NULL, false,
			        "required for %s (or \"password_set\": true to keep the stored one)", sec);
	} else if (json_object_get(in, "password") || pw_set) {
		add_err(c, fp, NULL, false, "not used with security %s%s", sec,
		        enterprise ? " (enterprise networks take eap.password)" : "");
	}
	path_key(fp, path, "eap");
	if (enterprise && !eap)
		add_err(c, fp, NULL, false, "required for %s", sec);
	else if (!enterprise && eap)
		add_err(c, fp, NULL, false, "only used with enterprise security");
}

static const struct field f_network[] = {
    {.name = "ssid", .kind = K_CUSTOM, .check = check_ssid},
    {.name = "hidden", .kind = K_BOOL},
    {.name = "auto_join", .kind = K_BOOL},
    {.name = "security",
     .kind = K_ENUM,
     .choices =
         (const char *const[]){"open", "wpa2_personal", "wpa3_personal", "wpa2_enterprise", "wpa3_enterprise", NULL}},
    {.name = "password", .kind = K_STR, .lo = 1, .hi = 64, .secret = true},
    {.name = "password_set", .kind = K_BOOL},
    {.name = "eap", .kind = K_OBJ, .fields = f_eap, .post = post_eap, .secret = true},
    {0}};

static json_t *check_network(vctx *c, const char *path, json_t *v)
{
	return v_obj(c, path, v, f_network, post_network, true);
}

static void post_wifi(vctx *c, const char *path, json_t *in, json_t *out)
{
	(void)in;
	json_t *nets = json_object_get(out, "networks");
	json_t *seen = json_object();
	size_t i;
	json_t *n;
	json_array_foreach(nets, i, n)
	{
		json_t *ssid = json_object_get(n, "ssid");
		if (!ssid)
			continue;
		if (json_object_get(seen, json_string_value(ssid))) {
			char fp[PATH_MAX_LEN], ip[PATH_MAX_LEN], sp[PATH_MAX_LEN];
			path_key(fp, path, "networks");
			path_idx(ip, fp, i);
			path_key(sp, ip, "ssid");
			add_err(c, sp, ssid, false, "duplicate SSID");
		}
		json_object_set_new(seen, json_string_value(ssid), json_true());
	}
	json_decref(seen);
}

static const struct field f_wifi[] = {
    {.name = "networks", .kind = K_LIST, .hi = 50, .check = check_network, .secret = true}, {0}};

static void post_app_control(vctx *c, const char *path, json_t *in, json_t *out)
{
	check_conflict(c, path, in, out, "allowed", "blocked", norm_pkg_quiet);
	check_conflict(c, path, in, out, "required", "blocked", norm_pkg_quiet);
}

static const struct field f_app_control[] = {
    {.name = "enabled", .kind = K_BOOL},
    {.name = "allowed", .kind = K_LIST, .hi = 1000, .check = check_package, .list_flags = L_COLLAPSE},
    {.name = "blocked", .kind = K_LIST, .hi = 1000, .check = check_package, .list_flags = L_COLLAPSE},
    {.name = "required", .kind = K_LIST, .hi = 1000, .check = check_package, .list_flags = L_COLLAPSE},
    {0}};

static const struct field f_update_schedule[] = {
    {.name = "mode", .kind = K_ENUM, .choices = (const char *const[]){"scheduled", "manual", NULL}},
    {.name = "frequency", .kind = K_ENUM, .choices = freq_choices},
    {.name = "time", .kind = K_CUSTOM, .check = check_time},
    {.name = "days", .kind = K_LIST, .hi = 7, .check = check_day, .list_flags = L_UNIQUE},
    {.name = "window_minutes", .kind = K_INT, .lo = 0, .hi = 1440},
    {0}};

static const struct field f_updates[] = {
    {.name = "patterns", .kind = K_OBJ, .fields = f_update_schedule, .post = post_update_schedule},
    {.name = "agent", .kind = K_OBJ, .fields = f_update_schedule, .post = post_update_schedule},
    {0}};

static const struct field f_privacy[] = {{.name = "ios_malicious_profile_scan", .kind = K_BOOL}, {0}};

static const struct field f_sections[] = {
    {.name = "malware_scan", .kind = K_OBJ, .fields = f_malware_scan},
    {.name = "web_protection", .kind = K_OBJ, .fields = f_web_protection},
    {.name = "sms_filter", .kind = K_OBJ, .fields = f_sms_filter},
    {.name = "call_filter", .kind = K_OBJ, .fields = f_call_filter},
    {.name = "password", .kind = K_OBJ, .fields = f_password, .post = post_password},
    {.name = "uninstall_protection", .kind = K_OBJ, .fields = f_uninstall, .post = post_uninstall, .secret = true},
    {.name = "feature_lock", .kind = K_OBJ, .fields = f_feature_lock},
    {.name = "wifi", .kind = K_OBJ, .fields = f_wifi, .post = post_wifi, .secret = true},
    {.name = "app_control", .kind = K_OBJ, .fields = f_app_control, .post = post_app_control},
    {.name = "updates", .kind = K_OBJ, .fields = f_updates},
    {.name = "privacy", .kind = K_OBJ, .fields = f_privacy},
    {0}};

bool bw_policy_section_known(const char *name)
{
	for (const struct field *f = f_sections; name && f->name; f++)
		if (strcmp(f->name, name) == 0)
			return true;
	return false;
}

int bw_policy_validate(json_t *doc, json_t **out, json_t **errors, bw_error *err)
{
	if (out)
		*out = NULL;
	if (errors)
		*errors = NULL;
	vctx c = {.errors = json_array()};
	if (!c.errors)
		return bw_error_set(err, BW_E_NOMEM, "policy: out of memory");
	json_t *norm = NULL;
	if (!json_is_object(doc)) {
		add_err(&c, "", doc, false, "the policy document must be a JSON object");
	} else {
		norm = v_obj(&c, "", doc, f_sections, NULL, false);
	}
	if (c.count > 0) {
		json_decref(norm);
		int rc = bw_error_set(err, BW_E_INVALID, "policy: %zu error%s; first: %s", c.count,
		                      c.count == 1 ? "" : "s", c.first);
		if (errors)
			*errors = c.errors;
		else
			json_decref(c.errors);
		return rc;
	}
	json_decref(c.errors);
	if (!norm)
		return bw_error_set(err, BW_E_NOMEM, "policy: out of memory");
	if (out)
		*out = norm;
	else
		json_decref(norm);
	return BW_OK;
}

/* ---- defaults, completion, merge ---- */

static const char defaults_json[] =
    "{"
    "\"malware_scan\": {\"realtime\": true, \"scheduled\": {\"enabled\": false, \"frequency\": \"daily\","
    " \"time\": \"02:00\", \"days\": [], \"scope\": \"all\"}},"
    "\"web_protection\": {\"enabled\": true, \"level\": \"medium\", \"lists\": {\"android\": {\"block\": [],"
    " \"allow\": []}, \"ios\": {\"block\": [], \"allow\": []}}},"
    "\"sms_filter\": {\"enabled\": false, \"mode\": \"block_list\", \"senders\": []},"
    "\"call_filter\": {\"enabled\": false, \"mode\": \"block_list\", \"numbers\": [], \"block_unknown\": false},"
    "\"password\": {\"required\": false, \"min_length\": 6, \"complexity\": {\"lower\": false, \"upper\": false,"
    " \"digit\": false, \"symbol\": false}, \"min_classes\": 0, \"max_failed_attempts\": 10,"
    " \"failed_action\": \"lock\", \"auto_lock_minutes\": 5, \"history\": 0},"
    "\"uninstall_protection\": {\"enabled\": false},"
    "\"feature_lock\": {\"items\": {}},"
    "\"wifi\": {\"networks\": []},"
    "\"app_control\": {\"enabled\": false, \"allowed\": [], \"blocked\": [], \"required\": []},"
    "\"updates\": {\"patterns\": {\"mode\": \"scheduled\", \"frequency\": \"daily\", \"time\": \"03:00\","
    " \"days\": [], \"window_minutes\": 60}, \"agent\": {\"mode\": \"manual\", \"frequency\": \"daily\","
    " \"time\": \"03:00\", \"days\": [], \"window_minutes\": 60}},"
    "\"privacy\": {\"ios_malicious_profile_scan\": false}"
    "}";

/* Defaults of each Wi-Fi network's optional fields. */
static const char network_defaults_json[] = "{\"hidden\": false, \"auto_join\": true}";

json_t *bw_policy_defaults(void)
{
	return json_loads(defaults_json, 0, NULL);
}

json_t *bw_policy_section_default(const char *section)
{
	if (!bw_policy_section_known(section))
		return NULL;
	json_t *d = bw_policy_defaults();
	json_t *s = json_incref(json_object_get(d, section));
	json_decref(d);
	return s;
}

json_t *bw_policy_merge(json_t *base, json_t *over)
{
	json_t *out = json_is_object(base) ? json_deep_copy(base) : json_object();
	if (!out)
		return NULL;
	const char *key;
	json_t *val;
	json_object_foreach(over, key, val)
	{
		json_object_set_new(out, key, json_deep_copy(val));
	}
	return out;
}

/* Adds every key of `tmpl` missing from `obj`; recurses into objects present on both sides. */
static void fill_missing(json_t *obj, json_t *tmpl)
{
	const char *key;
	json_t *tv;
	json_object_foreach(tmpl, key, tv)
	{
		json_t *ov = json_object_get(obj, key);
		if (!ov)
			json_object_set_new(obj, key, json_deep_copy(tv));
		else if (json_is_object(ov) && json_is_object(tv) && json_object_size(tv) > 0)
			fill_missing(ov, tv);
	}
}

json_t *bw_policy_complete(json_t *doc)
{
	json_t *out = json_is_object(doc) ? json_deep_copy(doc) : json_object();
	json_t *defs = bw_policy_defaults();
	json_t *netdef = json_loads(network_defaults_json, 0, NULL);
	if (!out || !defs || !netdef) {
		json_decref(out);
		out = NULL;
		goto done;
	}
	const char *key;
	json_t *sec;
	json_object_foreach(out, key, sec)
	{
		json_t *d = json_object_get(defs, key);
		if (json_is_object(sec) && json_is_object(d))
			fill_missing(sec, d);
	}
	json_t *nets = json_object_get(json_object_get(out, "wifi"), "networks");
	size_t i;
	json_t *n;
	json_array_foreach(nets, i, n)
	{
		if (json_is_object(n))
			fill_missing(n, netdef);
	}
done:
	json_decref(defs);
	json_decref(netdef);
	return out;
}
