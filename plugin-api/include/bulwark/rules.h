/* bulwark/rules.h: the "rules" capability (a compliance engine), registered with
 * host->capability_register(ctx, "rules", &ops, sizeof ops, arg, err) during init.
 * The host and other plugins use it to ask for an evaluation or read a device's verdicts. */
#ifndef BULWARK_RULES_H
#define BULWARK_RULES_H

#include <bulwark/errors.h>
#include <jansson.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct bw_rules_ops {
	uint32_t size; /* sizeof(struct bw_rules_ops) */
	/* Evaluates one device now (asynchronously is allowed: results and compliance.changed
	 * events follow). BW_E_NOTFOUND for an unknown device. Loop thread. */
	int (*evaluate)(void *arg, const char *device_id, bw_error *err);
	/* The device's latest results: {"compliant": bool, "rules": {id: {"verdict", "message",
	 * "since", "evaluated_at"}}, "evaluated_at"}; new reference. BW_E_NOTFOUND when never
	 * evaluated. Loop thread. */
	int (*results)(void *arg, const char *device_id, json_t **out, bw_error *err);
};

#ifdef __cplusplus
}
#endif
#endif
