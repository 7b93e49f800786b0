/* enroll.c: `bulwark-agent enroll`: one simulated device asks the server for an identity. It
 * generates an ECDSA P-256 key and a CSR, posts them with a device description to
 * /agent/v1/enroll, checks the certificate it gets back and keeps everything in the state
 * directory for `run`. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/x509.h>

#include "agent.h"

json_t *bwa_enroll_body(const char *method, const char *key, const char *email, const char *code, const char *csr,
                        json_t *device)
{
	json_t *b = json_object();

	json_object_set_new(b, "method", json_string(method));
	if (strcmp(method, "key") == 0) {
		json_object_set_new(b, "key", json_string(key));
	} else if (strcmp(method, "invitation") == 0) {
		json_object_set_new(b, "email", json_string(email));
		json_object_set_new(b, "code", json_string(code));
	} else {
		json_object_set_new(b, "user", json_string(email));
		json_object_set_new(b, "password", json_string(code));
	}
	json_object_set_new(b, "csr", json_string(csr));
	json_object_set(b, "device", device);
	return b;
}

int bwa_enroll_answer_check(json_t *answer, bw_error *err)
{
	const char *id = json_string_value(json_object_get(answer, "device_id"));
	const char *cert = json_string_value(json_object_get(answer, "certificate"));

	if (!id || !*id || strlen(id) > 128 || strpbrk(id, "/\\ \t\r\n"))
		return bw_error_set(err, BW_E_REMOTE, "the enrollment answer has no usable device_id");
	if (!cert || !strstr(cert, "-----BEGIN CERTIFICATE-----"))
		return bw_error_set(err, BW_E_REMOTE, "the enrollment answer has no PEM certificate");
	return BW_OK;
}

static void usage_enroll(FILE *f)
{
	fputs("usage: bulwark-agent enroll --server URL --state DIR [--ca FILE]\n"
	      "         (--key KEY | --invitation EMAIL --code CODE | --directory USER)\n"
	      "         [--platform android|ios] [--os-version V] [--model M] [--manufacturer M]\n"
	      "         [--imei N] [--meid M] [--wifi-mac M] [--serial S] [--phone N]\n"
	      "         [--push | --push-provider apns|fcm] [--push-token T]\n"
	      "         [--retries N] [--force]\n"
	      "The enrollment key may also come from BULWARK_ENROLL_KEY; the directory password\n"
	      "comes from BULWARK_PASSWORD.\n",
	      f);
}

static void format_time(int64_t t, char *buf, size_t size)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (!gmtime_r(&tt, &tm) || !strftime(buf, size, "%Y-%m-%d %H:%M UTC", &tm))
		snprintf(buf, size, "%lld", (long long)t);
}

enum {
	O_SERVER = 1000,
	O_CA,
	O_KEY,
	O_INVITATION,
	O_CODE,
	O_DIRECTORY,
	O_STATE,
	O_PLATFORM,
	O_OS,
	O_MODEL,
	O_MANUFACTURER,
	O_IMEI,
	O_MEID,
	O_MAC,
	O_SERIAL,
	O_PHONE,
	O_PUSH,
	O_PUSH_PROVIDER,
	O_PUSH_TOKEN,
	O_RETRIES,
	O_FORCE,
	O_HELP
};

int bwa_cmd_enroll(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"server", required_argument, NULL, O_SERVER},
	    {"ca", required_argument, NULL, O_CA},
	    {"key", required_argument, NULL, O_KEY},
	    {"invitation", required_argument, NULL, O_INVITATION},
	    {"code", required_argument, NULL, O_CODE},
	    {"directory", required_argument, NULL, O_DIRECTORY},
	    {"state", required_argument, NULL, O_STATE},
	    {"platform", required_argument, NULL, O_PLATFORM},
	    {"os-version", required_argument, NULL, O_OS},
	    {"model", required_argument, NULL, O_MODEL},
	    {"manufacturer", required_argument, NULL, O_MANUFACTURER},
	    {"imei", required_argument, NULL, O_IMEI},
	    {"meid", required_argument, NULL, O_MEID},
	    {"wifi-mac", required_argument, NULL, O_MAC},
	    {"serial", required_argument, NULL, O_SERIAL},
	    {"phone", required_argument, NULL, O_PHONE},
	    {"push", no_argument, NULL, O_PUSH},
	    {"push-provider", required_argument, NULL, O_PUSH_PROVIDER},
	    {"push-token", required_argument, NULL, O_PUSH_TOKEN},
	    {"retries", required_argument, NULL, O_RETRIES},
	    {"force", no_argument, NULL, O_FORCE},
	    {"help", no_argument, NULL, O_HELP},
	    {NULL, 0, NULL, 0},
	};
	struct bwa_profile prof = {0};
	const char *server_arg = NULL, *ca = NULL, *key = NULL, *email = NULL, *code = NULL, *user = NULL, *dir = NULL,
	           *method;
	long retries = 0;
	bool force = false;
	char *server = NULL, *ca_pem = NULL, *key_pem = NULL, *csr = NULL;
	EVP_PKEY *pkey = NULL;
	X509 *cert = NULL;
	json_t *device = NULL, *body = NULL;
	struct bwa_http http = {0};
	struct bwa_response resp = {0};
	bw_error err = {0};
	enum bwa_outcome out;
	int c, ret = BWA_EXIT_FAIL;

	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case O_SERVER:
			server_arg = optarg;
			break;
		case O_CA:
			ca = optarg;
			break;
		case O_KEY:
			key = optarg;
			break;
		case O_INVITATION:
			email = optarg;
			break;
		case O_CODE:
			code = optarg;
			break;
		case O_DIRECTORY:
			user = optarg;
			break;
		case O_STATE:
			dir = optarg;
			break;
		case O_PLATFORM:
			prof.platform = optarg;
			break;
		case O_OS:
			prof.os_version = optarg;
			break;
		case O_MODEL:
			prof.model = optarg;
			break;
		case O_MANUFACTURER:
			prof.manufacturer = optarg;
			break;
		case O_IMEI:
			prof.imei = optarg;
			break;
		case O_MEID:
			prof.meid = optarg;
			break;
		case O_MAC:
			prof.wifi_mac = optarg;
			break;
		case O_SERIAL:
			prof.serial = optarg;
			break;
		case O_PHONE:
			prof.phone = optarg;
			break;
		case O_PUSH:
			prof.push = true;
			break;
		case O_PUSH_PROVIDER:
			if (strcmp(optarg, "apns") != 0 && strcmp(optarg, "fcm") != 0)
				return bwa_fail(BWA_EXIT_USAGE, "enroll: --push-provider must be apns or fcm");
			prof.push_provider = optarg;
			break;
		case O_PUSH_TOKEN:
			if (!*optarg || strlen(optarg) > 255 || strpbrk(optarg, " \t\r\n\"\\"))
				return bwa_fail(BWA_EXIT_USAGE,
				                "enroll: --push-token must be 1 to 255 printable characters");
			prof.push_token = optarg;
			break;
		case O_FORCE:
			force = true;
			break;
		case O_RETRIES:
			if (!bwa_parse_long(optarg, 0, 1000, &retries))
				return bwa_fail(BWA_EXIT_USAGE, "enroll: --retries must be a number from 0 to 1000");
			break;
		case 'h':
		case O_HELP:
			usage_enroll(stdout);
			return BWA_EXIT_OK;
		case ':':
			return bwa_fail(BWA_EXIT_USAGE, "enroll: option %s needs a value", argv[optind - 1]);
		default:
			return bwa_fail(BWA_EXIT_USAGE, "enroll: unknown option %s", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return bwa_fail(BWA_EXIT_USAGE, "enroll: unexpected argument %s", argv[optind]);
	if (!key && !email && !user) {
		const char *env = getenv("BULWARK_ENROLL_KEY");

		key = env && *env ? env : NULL;
	}
	if (!server_arg || !dir) {
		usage_enroll(stderr);
		return bwa_fail(BWA_EXIT_USAGE, "enroll: --server and --state are required");
	}
	if ((key != NULL) + (email != NULL) + (user != NULL) != 1)
		return bwa_fail(
		    BWA_EXIT_USAGE,
		    "enroll: give exactly one of --key KEY, --invitation EMAIL (with --code) or --directory USER");
	if (email && !code)
		return bwa_fail(BWA_EXIT_USAGE, "enroll: --invitation needs --code CODE");
	if (code && !email)
		return bwa_fail(BWA_EXIT_USAGE, "enroll: --code belongs with --invitation EMAIL");
	if (user) {
		code = getenv("BULWARK_PASSWORD");
		if (!code || !*code)
			return bwa_fail(BWA_EXIT_USAGE, "enroll: --directory needs the password in BULWARK_PASSWORD");
		email = user;
	}
	if (prof.platform && strcmp(prof.platform, "android") != 0 && strcmp(prof.platform, "ios") != 0)
		return bwa_fail(BWA_EXIT_USAGE, "enroll: --platform must be android or ios");
	method = key ? "key" : user ? "directory" : "invitation";
	if (!(server = bwa_server_url(server_arg, &err)))
		return bwa_fail(BWA_EXIT_USAGE, "enroll: %s", err.message);
	if (bwa_state_exists(dir) && !force) {
		free(server);
		return bwa_fail(BWA_EXIT_FAIL,
		                "enroll: %s already holds an enrolled device (use --force to replace it)", dir);
	}
	if (ca && bwa_read_file(ca, 1024 * 1024, &ca_pem, NULL, &err) != BW_OK) {
		ret = bwa_fail(BWA_EXIT_USAGE, "enroll: --ca: %s", err.message);
		goto out;
	}

	if (!(pkey = bwa_key_generate(&err)) || !(csr = bwa_csr_pem(pkey, &err))) {
		ret = bwa_fail(BWA_EXIT_FAIL, "enroll: %s", err.message);
		goto out;
	}
	key_pem = bwa_key_pem(pkey);
	device = bwa_device_new(&prof);
	body = bwa_enroll_body(method, key, email, code, csr, device);
	if (bwa_http_init(&http, &(struct bwa_http_config){.server = server, .ca_file = ca, .retries = retries},
	                  &err) != BW_OK) {
		ret = bwa_fail(BWA_EXIT_FAIL, "enroll: %s", err.message);
		goto out;
	}
	out = bwa_http_call(&http, "enroll", "POST", "/agent/v1/enroll", body, NULL, &resp, &err);
	if (out != BWA_DONE) {
		if (out == BWA_REFUSED || out == BWA_NOAUTH) {
			char why[600];

			bwa_response_describe(&resp, why, sizeof why);
			ret = bwa_fail(BWA_EXIT_FAIL, "enrollment refused: %s", why);
		} else {
			ret = bwa_fail(bwa_exit_for(out), "%s", err.message);
		}
		goto out;
	}
	if (bwa_enroll_answer_check(resp.json, &err) != BW_OK) {
		ret = bwa_fail(BWA_EXIT_FAIL, "enroll: %s", err.message);
		goto out;
	}
	{
		const char *id = json_string_value(json_object_get(resp.json, "device_id"));
		char cn[256], when[64];
		int64_t not_after = 0;

		cert = bwa_cert_parse(json_string_value(json_object_get(resp.json, "certificate")), &err);
		if (!cert) {
			ret = bwa_fail(BWA_EXIT_FAIL, "enroll: the server's certificate: %s", err.message);
			goto out;
		}
		if (X509_check_private_key(cert, pkey) != 1) {
			ret = bwa_fail(BWA_EXIT_FAIL, "enroll: the server returned a certificate for another key");
			goto out;
		}
		bwa_cert_info(cert, cn, sizeof cn, &not_after, NULL);
		if (strcmp(cn, id) != 0)
			bwa_warn("the certificate's subject CN (%s) is not the device id %s", cn, id);
		if (!json_object_get(resp.json, "not_after"))
			json_object_set_new(resp.json, "not_after", json_integer(not_after));
		if (bwa_state_write_new(dir, server, ca_pem, key_pem, resp.json, device, true, &err) != BW_OK) {
			ret = bwa_fail(BWA_EXIT_FAIL, "enroll: enrolled as %s but cannot save the state: %s", id,
			               err.message);
			goto out;
		}
		format_time(not_after, when, sizeof when);
		bwa_say("enrolled device %s (%s %s, IMEI %s); certificate valid until %s; state in %s", id,
		        json_string_value(json_object_get(device, "manufacturer")),
		        json_string_value(json_object_get(device, "model")),
		        json_string_value(json_object_get(device, "imei")), when, dir);
		ret = BWA_EXIT_OK;
	}
out:
	bwa_response_free(&resp);
	bwa_http_cleanup(&http);
	json_decref(body);
	json_decref(device);
	X509_free(cert);
	EVP_PKEY_free(pkey);
	if (key_pem) {
		OPENSSL_cleanse(key_pem, strlen(key_pem));
		free(key_pem);
	}
	free(csr);
	free(ca_pem);
	free(server);
	return ret;
}
