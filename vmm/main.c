/* ember: entry point. Order (the privilege checkpoint of DESIGN.md): parse the configuration →
 * open the host resources and build the VM → run the event loop until the guest stops. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "vmm.h"

static int cmd_run(int argc, char **argv, const struct timespec *t0)
{
    static struct vm_config cfg; /* ~14 KiB of paths: keep it off the stack */
    struct vm vm;
    char err[512];
    sigset_t block;
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

    /* Termination signals are read from a signalfd by the event loop; every thread created
     * from here on inherits the mask. A closed stdout must not kill us: drop the output. */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGQUIT);
    pthread_sigmask(SIG_BLOCK, &block, NULL);
    if (vcpu_signal_init()) {
        log_err("cannot install the vCPU kick signal: %s", strerror(errno));
        return EXIT_GENERIC;
    }

    memset(&vm, 0, sizeof(vm));
    vm.process_start = *t0;
    ret = vm_create(&vm, &cfg, err, sizeof(err));
    if (ret) {
        log_err("%s", err);
        vm_destroy(&vm);
        return vm.config_error ? EXIT_BAD_CONFIG : EXIT_GENERIC;
    }
    log_debug("VM built %llu us after process start",
              (unsigned long long)log_us_since(t0, CLOCK_MONOTONIC));
    ret = loop_run(&vm);
    vm_destroy(&vm);
    log_debug("exiting with code %d", ret);
    return ret;
}

int main(int argc, char **argv)
{
    struct timespec t0;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
        printf("ember %s\n", EMBER_VERSION);
        return EXIT_OK;
    }
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        cli_usage(stdout);
        return EXIT_OK;
    }
    if (argc >= 2 && strcmp(argv[1], "run") == 0)
        return cmd_run(argc - 1, argv + 1, &t0);
    if (argc >= 2)
        log_err("unknown command '%s' (try ember --help)", argv[1]);
    else
        cli_usage(stderr);
    return EXIT_BAD_ARGS;
}
