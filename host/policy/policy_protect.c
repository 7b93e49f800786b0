/* host/policy/policy_protect.c: the three forms of a policy's secrets (admin input with clear passwords, the
 * stored form with a PBKDF2 verifier and AES-GCM ciphertexts, the admin view with only "password_set", the
 * device form with clear Wi-Fi secrets) and the diff between two documents, which never shows a secret. */
#include "policy_doc.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Wipes a clear secret held in a JSON string before it is released. */
static void wipe_string(json_t *v)
{
	if (json_is_string(v) && v->refcount == 1)
		OPENSSL_cleanse((void *)json_string_value(v), json_string_length(v));
}

static void del_secret(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);
	if (v) {
		wipe_string(v);
		json_object_del(obj, key);
	}
}

static json_t *find_network(json_t *doc, const char *ssid)
{
	json_t *nets = json_object_get(json_object_get(doc, "wifi"), "networks");
	size_t i;
	json_t *n;
	json_array_foreach(nets, i, n)
	{
		const char *s = json_string_value(json_object_get(n, "ssid"));
		if (s && ssid && strcmp(s, ssid) == 0)
			return n;
	}
	return NULL;
}

/* obj[key]: clear string -> {"enc": ...}; {"enc"} kept; absent with password_set -> previous one. */
static int protect_secret(bw_secrets *s, json_t *obj, const char *key, json_t *prev_obj, const char *where,
                          bw_error *err)
{
	json_t *v = json_object_get(obj, key);
	bool keep = json_is_true(json_object_get(obj, "password_set"));
	json_object_del(obj, "password_set");
	if (json_is_string(v)) {
		if (!s)
			return bw_error_set(err, BW_E_INVALID, "policy: %s.%s: no secrets key to encrypt it with",
			                    where, key);
		char *enc = NULL;
		int rc = bw_secrets_encrypt(s, json_string_value(v), &enc, err);
		if (rc != BW_OK)
			return rc;
		del_secret(obj, key);
		json_object_set_new(obj, key, json_pack("{s:s}", "enc", enc));
		free(enc);
		return BW_OK;
	}
	if (json_is_object(v) && json_is_string(json_object_get(v, "enc")))
		return BW_OK;
	if (v)
		return bw_error_set(err, BW_E_INVALID, "policy: %s.%s must be a string", where, key);
	if (!keep)
		return BW_OK;
	json_t *pv = json_object_get(prev_obj, key);
	if (!json_is_object(pv) || !json_is_string(json_object_get(pv, "enc")))
		return bw_error_set(err, BW_E_INVALID,
		                    "policy: %s.password_set is true but no stored %s exists to keep; give the %s",
		                    where, key, key);
	json_object_set_new(obj, key, json_deep_copy(pv));
	return BW_OK;
}

int bw_policy_protect(bw_secrets *s, json_t *doc, json_t *previous, json_t **out, bw_error *err)
{
	if (!out)
		return bw_error_set(err, BW_E_INVALID, "policy: protect needs an output");
	*out = NULL;
	if (!json_is_object(doc))
		return bw_error_set(err, BW_E_INVALID, "policy: the document must be a JSON object");
	json_t *res = json_deep_copy(doc);
	if (!res)
		return bw_error_set(err, BW_E_NOMEM, "policy: out of memory");
	int rc = BW_OK;

	json_t *up = json_object_get(res, "uninstall_protection");
	if (json_is_object(up)) {
		json_t *pw = json_object_get(up, "password");
		bool keep = json_is_true(json_object_get(up, "password_set"));
		json_object_del(up, "password_set");
		if (json_is_string(pw)) {
			json_t *ver = NULL;
			rc = bw_verifier_make(json_string_value(pw), &ver, err);
			if (rc != BW_OK)
				goto fail;
			json_object_set_new(up, "verifier", ver);
		} else if (!json_is_object(json_object_get(up, "verifier")) && keep) {
			json_t *pv = json_object_get(json_object_get(previous, "uninstall_protection"), "verifier");
			if (!json_is_object(pv)) {
				rc = bw_error_set(
				    err, BW_E_INVALID,
				    "policy: uninstall_protection.password_set is true but no stored password "
				    "exists to keep; give the password");
				goto fail;
			}
			json_object_set_new(up, "verifier", json_deep_copy(pv));
		}
		del_secret(up, "password");
		if (json_is_true(json_object_get(up, "enabled")) && !json_object_get(up, "verifier")) {
			rc = bw_error_set(
			    err, BW_E_INVALID,
			    "policy: uninstall_protection.enabled needs a password (none given or stored)");
			goto fail;
		}
	}

	json_t *nets = json_object_get(json_object_get(res, "wifi"), "networks");
	size_t i;
	json_t *n;
	json_array_foreach(nets, i, n)
	{
		char where[64];
		snprintf(where, sizeof where, "wifi.networks[%zu]", i);
		json_t *prev_net = find_network(previous, json_string_value(json_object_get(n, "ssid")));
		rc = protect_secret(s, n, "password", prev_net, where, err);
		if (rc != BW_OK)
			goto fail;
		json_t *eap = json_object_get(n, "eap");
		if (json_is_object(eap)) {
			snprintf(where, sizeof where, "wifi.networks[%zu].eap", i);
			rc = protect_secret(s, eap, "password", json_object_get(prev_net, "eap"), where, err);
			if (rc != BW_OK)
				goto fail;
		}
	}
	*out = res;
	return BW_OK;
fail:
	json_decref(res);
	return rc;
}

/* Replaces any form of the secret obj[key] by "password_set": true. */
static void redact_secret(json_t *obj, const char *key, const char *extra)
{
	bool set = json_object_get(obj, key) || (extra && json_object_get(obj, extra)) ||
	           json_is_true(json_object_get(obj, "password_set"));
	del_secret(obj, key);
	if (extra)
		json_object_del(obj, extra);
	if (set)
		json_object_set_new(obj, "password_set", json_true());
	else
		json_object_del(obj, "password_set");
}

json_t *bw_policy_redact(json_t *stored)
{
	json_t *res = json_is_object(stored) ? json_deep_copy(stored) : json_object();
	if (!res)
		return NULL;
	json_t *up = json_object_get(res, "uninstall_protection");
	if (json_is_object(up)) {
		redact_secret(up, "password", "verifier");
		if (!json_object_get(up, "password_set"))
			json_object_set_new(up, "password_set", json_false());
	}
	json_t *nets = json_object_get(json_object_get(res, "wifi"), "networks");
	size_t i;
	json_t *n;
	json_array_foreach(nets, i, n)
	{
		if (!json_is_object(n))
			continue;
		redact_secret(n, "password", NULL);
		json_t *eap = json_object_get(n, "eap");
		if (json_is_object(eap))
			redact_secret(eap, "password", NULL);
	}
	return res;
}

static int reveal_secret(bw_secrets *s, json_t *obj, const char *where, bw_error *err)
{
	json_object_del(obj, "password_set");
	json_t *v = json_object_get(obj, "password");
	if (!v || json_is_string(v))
		return BW_OK;
	const char *enc = json_string_value(json_object_get(v, "enc"));
	if (!enc)
		return bw_error_set(err, BW_E_INVALID, "policy: %s.password has an unknown stored form", where);
	if (!s)
		return bw_error_set(err, BW_E_INVALID, "policy: %s.password: no secrets key to decrypt it with", where);
	char *plain = NULL;
	bw_error derr = {0};
	if (bw_secrets_decrypt(s, enc, &plain, &derr) != BW_OK)
		return bw_error_set(err, derr.code, "policy: %s.password: %s", where, derr.message);
	json_t *pv = json_string(plain);
	OPENSSL_cleanse(plain, strlen(plain));
	free(plain);
	if (!pv)
		return bw_error_set(err, BW_E_INVALID, "policy: %s.password is not valid UTF-8", where);
	json_object_set_new(obj, "password", pv);
	return BW_OK;
}

int bw_policy_for_device(bw_secrets *s, json_t *stored, json_t **out, bw_error *err)
{
	if (!out)
		return bw_error_set(err, BW_E_INVALID, "policy: for_device needs an output");
	*out = NULL;
	if (!json_is_object(stored))
		return bw_error_set(err, BW_E_INVALID, "policy: the document must be a JSON object");
	json_t *res = bw_policy_complete(stored);
	if (!res)
		return bw_error_set(err, BW_E_NOMEM, "policy: out of memory");
	json_t *up = json_object_get(res, "uninstall_protection");
	if (json_is_object(up)) {
		/* only the verifier goes to devices; a clear password never does */
		del_secret(up, "password");
		json_object_del(up, "password_set");
	}
	json_t *nets = json_object_get(json_object_get(res, "wifi"), "networks");
	size_t i;
	json_t *n;
	json_array_foreach(nets, i, n)
	{
		char where[64];
		snprintf(where, sizeof where, "wifi.networks[%zu]", i);
		int rc = json_is_object(n) ? reveal_secret(s, n, where, err) : BW_OK;
		json_t *eap = json_object_get(n, "eap");
		if (rc == BW_OK && json_is_object(eap)) {
			snprintf(where, sizeof where, "wifi.networks[%zu].eap", i);
			rc = reveal_secret(s, eap, where, err);
		}
		if (rc != BW_OK) {
			json_decref(res);
			return rc;
		}
	}
	*out = res;
	return BW_OK;
}

/* ---- diff ---- */

#define DIFF_PATH_MAX 512

static bool is_secret_key(const char *key)
{
	return strcmp(key, "password") == 0 || strcmp(key, "password_set") == 0 || strcmp(key, "verifier") == 0;
}

/* Compact JSON of the secret material of an object (NULL when none; "" when only "password_set": true). */
static char *secret_token(json_t *obj)
{
	json_t *v = json_object_get(obj, "verifier");
	if (!v)
		v = json_object_get(obj, "password");
	if (v)
		return json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
	if (json_is_true(json_object_get(obj, "password_set")))
		return strdup("");
	return NULL;
}

static void mask_in_place(json_t *x)
{
	if (json_is_object(x)) {
		const char *key;
		json_t *m;
		json_object_foreach(x, key, m)
		{
			if (strcmp(key, "password") == 0 || strcmp(key, "verifier") == 0)
				json_object_set_new(x, key, json_string("(changed)"));
			else
				mask_in_place(m);
		}
	} else if (json_is_array(x)) {
		size_t i;
		json_t *m;
		json_array_foreach(x, i, m)
		{
			mask_in_place(m);
		}
	}
}

/* A copy of `v` with every secret member replaced by "(changed)" (for values emitted whole). */
static json_t *mask_secrets(json_t *v)
{
	if (!v)
		return json_null();
	json_t *c = json_deep_copy(v);
	mask_in_place(c);
	return c;
}

/* Members of `a` not in `b` (lists of strings or other values), using a set for long lists. */
static json_t *list_minus(json_t *a, json_t *b)
{
	json_t *res = json_array(), *set = json_object();
	size_t i;
	json_t *x;
	json_array_foreach(b, i, x)
	{
		char *k = json_dumps(x, JSON_ENCODE_ANY | JSON_COMPACT);
		if (k)
			json_object_set_new(set, k, json_true());
		free(k);
	}
	json_array_foreach(a, i, x)
	{
		char *k = json_dumps(x, JSON_ENCODE_ANY | JSON_COMPACT);
		if (k && !json_object_get(set, k))
			json_array_append(res, x);
		free(k);
	}
	json_decref(set);
	return res;
}

static void diff_emit(json_t *out, const char *path, json_t *a, json_t *b)
{
	json_t *e = json_pack("{s:s, s:o, s:o}", "path", path, "from", mask_secrets(a), "to", mask_secrets(b));
	if (!e)
		return;
	/* for lists of values, also what was added and removed */
	if ((json_is_array(a) || !a) && (json_is_array(b) || !b) && (a || b)) {
		json_object_set_new(e, "added", list_minus(b, a));
		json_object_set_new(e, "removed", list_minus(a, b));
	}
	json_array_append_new(out, e);
}

static bool has_object(json_t *arr)
{
	size_t i;
	json_t *x;
	json_array_foreach(arr, i, x)
	{
		if (json_is_object(x))
			return true;
	}
	return false;
}

static void diff_rec(json_t *out, const char *path, json_t *a, json_t *b, int depth)
{
	if (a && b && json_equal(a, b))
		return;
	bool ao = json_is_object(a) || !a, bo = json_is_object(b) || !b;
	if (ao && bo && (a || b)) {
		if (depth >= 1) {
			/* secrets: one logical ".password" path per object, values never shown */
			char *ta = a ? secret_token(a) : NULL, *tb = b ? secret_token(b) : NULL;
			bool changed =
			    (ta == NULL) != (tb == NULL) || (ta && tb && ta[0] && tb[0] && strcmp(ta, tb) != 0);
			if (ta)
				OPENSSL_cleanse(ta, strlen(ta));
			if (tb)
				OPENSSL_cleanse(tb, strlen(tb));
			if (changed) {
				char p[DIFF_PATH_MAX];
				snprintf(p, sizeof p, "%s.password", path);
				json_t *e = json_pack("{s:s, s:s?, s:s?}", "path", p, "from", ta ? "(changed)" : NULL,
				                      "to", tb ? "(changed)" : NULL);
				if (e)
					json_array_append_new(out, e);
			}
			free(ta);
			free(tb);
		}
		const char *key;
		json_t *v;
		json_object_foreach(a, key, v)
		{
			if (depth >= 1 && is_secret_key(key))
				continue;
			char p[DIFF_PATH_MAX];
			snprintf(p, sizeof p, "%s%s%s", path, path[0] ? "." : "", key);
			diff_rec(out, p, v, json_object_get(b, key), depth + 1);
		}
		json_object_foreach(b, key, v)
		{
			if ((depth >= 1 && is_secret_key(key)) || json_object_get(a, key))
				continue;
			char p[DIFF_PATH_MAX];
			snprintf(p, sizeof p, "%s%s%s", path, path[0] ? "." : "", key);
			diff_rec(out, p, NULL, v, depth + 1);
		}
		return;
	}
	bool aa = json_is_array(a) || !a, ba = json_is_array(b) || !b;
	if (aa && ba && (has_object(a) || has_object(b))) {
		/* lists of objects (Wi-Fi networks): element by element, so secrets inside stay masked */
		size_t na = json_array_size(a), nb = json_array_size(b);
		for (size_t i = 0; i < (na > nb ? na : nb); i++) {
			char p[DIFF_PATH_MAX];
			snprintf(p, sizeof p, "%s[%zu]", path, i);
			diff_rec(out, p, json_array_get(a, i), json_array_get(b, i), depth + 1);
		}
		return;
	}
	diff_emit(out, path, a, b);
}

json_t *bw_policy_diff(json_t *from, json_t *to)
{
	json_t *out = json_array();
	if (!out)
		return NULL;
	json_t *ea = json_is_object(from) ? NULL : json_object(), *eb = json_is_object(to) ? NULL : json_object();
	diff_rec(out, "", ea ? ea : from, eb ? eb : to, 0);
	json_decref(ea);
	json_decref(eb);
	return out;
}
