/* main.c: bulwark-agent's entry point: global initialisation (libcurl, signals) and dispatch to
 * the commands (enroll, run, unenroll, status, load, policy, simulate-schedule). */
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "agent.h"

static void usage(FILE *f)
{
	fputs("usage: bulwark-agent COMMAND [OPTIONS]\n"
	      "A simulated device speaking the Bulwark agent protocol (docs/bulwark-agent.md).\n"
	      "\n"
	      "commands:\n"
	      "  enroll    enroll one simulated device, keeping its identity in a state directory\n"
	      "  run       check in, execute commands, upload events, report inventory changes\n"
	      "  unenroll  tell the server this device leaves management\n"
	      "  status    show what a state directory holds\n"
	      "  load      enroll many devices and measure check-in throughput and latency\n"
	      "  policy    show the applied policy and its scheduled scans\n"
	      "  simulate-schedule\n"
	      "            emit the scheduled scans of the applied policy between two (simulated) times\n"
	      "\n"
	      "`bulwark-agent COMMAND --help` lists a command's options.\n",
	      f);
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} commands[] = {
	    {"enroll", bwa_cmd_enroll},
	    {"run", bwa_cmd_run},
	    {"unenroll", bwa_cmd_unenroll},
	    {"status", bwa_cmd_status},
	    {"load", bwa_cmd_load},
	    {"policy", bwa_cmd_policy},
	    {"simulate-schedule", bwa_cmd_simulate_schedule},
	};
	int ret;

	if (argc < 2) {
		usage(stderr);
		return BWA_EXIT_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return BWA_EXIT_OK;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("bulwark-agent %s\n", BWA_VERSION);
		return BWA_EXIT_OK;
	}
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
		if (strcmp(argv[1], commands[i].name) != 0)
			continue;
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			return bwa_fail(BWA_EXIT_FAIL, "cannot initialise libcurl");
		bwa_signals_install();
		/* The command sees its name as argv[0], so getopt starts at its first option. */
		ret = commands[i].fn(argc - 1, argv + 1);
		curl_global_cleanup();
		return ret;
	}
	usage(stderr);
	return bwa_fail(BWA_EXIT_USAGE, "unknown command %s", argv[1]);
}
