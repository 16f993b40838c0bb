/* ember: entry point. Two front ends share one configuration path (api-socket/run.c):
 *   ember [--api-sock PATH] [...]  Firecracker's command line and HTTP API (no arguments:
 *                                  the API on /run/firecracker.socket, as firecracker)
 *   ember run --kernel PATH [...]  a VM on this terminal, configured from options
 * Order (the privilege checkpoint of DESIGN.md): parse the configuration → open the host
 * resources and build the VM → run the event loop until the guest stops. */
#include <stdio.h>
#include <string.h>

#include "vmm.h"

static int cmd_run(int argc, char **argv, const struct timespec *t0)
{
    static struct vm_config cfg; /* ~14 KiB of paths: keep it off the stack */
    char err[512];
    int ret;

    cfg_defaults(&cfg);
    ret = cli_parse(&cfg, argc, argv, err, sizeof(err));
    if (ret == 1)
        return EXIT_OK;
    if (ret < 0) {
        log_err("%s (see ember run --help)", err);
        return EXIT_BAD_ARGS;
    }
    if (cfg_validate(&cfg, err, sizeof(err))) {
        log_err("%s", err);
        return EXIT_BAD_CONFIG;
    }
    return api_run_cli(&cfg, t0);
}

int main(int argc, char **argv)
{
    struct timespec t0;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
        /* Firecracker's form: clients (Kata) read the 2nd word as the API's semver */
        printf("Firecracker v%s (ember %s)\n", EMBER_FC_VERSION, EMBER_VERSION);
        return EXIT_OK;
    }
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        cli_usage(stdout);
        printf("\n");
        args_usage(stdout);
        return EXIT_OK;
    }
    if (argc >= 2 && strcmp(argv[1], "run") == 0)
        return cmd_run(argc - 1, argv + 1, &t0);
    /* Firecracker's flags; with none at all, Firecracker serves /run/firecracker.socket */
    if (argc < 2 || strncmp(argv[1], "--", 2) == 0)
        return api_main(argc, argv, &t0);
    log_err("unknown command '%s' (try ember --help)", argv[1]);
    return EXIT_BAD_ARGS;
}
