/* The `firecracker` command line, as Firecracker clients and the jailer pass it:
 * `ember --api-sock PATH [--config-file F] [--id ID] ...`. Pure parsing, no side effects. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"

void args_usage(void *out)
{
    fprintf(out,
            "usage: ember [--api-sock PATH] [options]     Firecracker-compatible VMM\n"
            "       ember run --kernel PATH [options]     boot a VM on this terminal\n"
            "\n"
            "  --api-sock PATH                 API socket (default %s)\n"
            "  --id ID                         instance id, 1-64 of [A-Za-z0-9-] (default %s)\n"
            "  --config-file FILE              boot at once from a JSON configuration\n"
            "  --no-api                        no API socket (needs --config-file)\n"
            "  --boot-timer                    log Guest-boot-time when the guest signals it\n"
            "  --log-path PATH                 log to a file or FIFO (default: stdout)\n"
            "  --level LEVEL                   Off, Error, Warning, Info (default), Debug, Trace\n"
            "  --show-level, --show-log-origin add the level / file:line to log lines\n"
            "  --metrics-path PATH             write metrics (one JSON line per flush)\n"
            "  --http-api-max-payload-size N   largest request body in bytes (default %d)\n"
            "  --http-api-max-connections N    open API connections, 1 to %d (default %d, as\n"
            "                                  Firecracker); one more gets a 503\n"
            "  --http-api-idle-give-way        ember's own: at the limit, a connection idle\n"
            "                                  between two requests is closed to let the new\n"
            "                                  one in (default off: the new one gets the 503)\n"
            "  --http-api-idle-timeout S       close a connection idle for S seconds, 1 to %d\n"
            "                                  (default %d)\n"
            "  --allow-core-dumps              stay dumpable, RLIMIT_CORE as inherited (default:\n"
            "                                  not dumpable, RLIMIT_CORE 0: a core holds all\n"
            "                                  guest RAM); spelt out in full\n"
            "  --start-time-us N, --start-time-cpu-us N, --parent-cpu-time-us N\n"
            "                                  start times passed by the jailer\n"
            "  --seccomp-filter FILE           per-thread filters from FILE (see ember-seccomp)\n"
            "  --no-seccomp                    install no seccomp filter\n"
            "  --strict-sandbox                refuse to start unjailed or with capabilities\n"
            "  --version, --help\n",
            API_SOCK_DEFAULT, API_INSTANCE_ID_DEFAULT, API_PAYLOAD_MAX_DEFAULT, API_CONN_LIMIT_MAX,
            API_CONN_LIMIT, API_IDLE_TIMEOUT_MAX_S, API_IDLE_TIMEOUT_S);
}

static int number(const char *opt, const char *s, uint64_t *out, char *err, size_t errlen)
{
    char *end;

    errno = 0;
    unsigned long long v = (s[0] >= '0' && s[0] <= '9') ? strtoull(s, &end, 10) : 0;
    if (s[0] < '0' || s[0] > '9' || errno || *end)
        return errf(err, errlen, -EINVAL, "Arguments parsing error: --%s '%s' is not a number.",
                    opt, s);
    *out = v;
    return 0;
}

static bool instance_id_valid(const char *id)
{
    size_t n = strlen(id);

    if (n < 1 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-'))
            return false;
    }
    return true;
}

static int level_parse(const char *s, enum api_log_level *out)
{
    static const char *const names[] = {"off", "error", "warning", "info", "debug", "trace"};

    for (unsigned i = 0; i < 6; i++)
        if (!strcasecmp(s, names[i])) {
            *out = (enum api_log_level)i;
            return 0;
        }
    if (!strcasecmp(s, "warn")) {
        *out = API_LOG_WARN;
        return 0;
    }
    return -EINVAL;
}

int args_parse(struct api_args *a, int argc, char **argv, char *err, size_t errlen)
{
    enum {
        O_SOCK = 256,
        O_ID,
        O_CONFIG,
        O_NO_API,
        O_BOOT_TIMER,
        O_LOG_PATH,
        O_LEVEL,
        O_SHOW_LEVEL,
        O_SHOW_ORIGIN,
        O_METRICS,
        O_PAYLOAD,
        O_MAX_CONNS,
        O_IDLE_TIMEOUT,
        O_IDLE_GIVE_WAY,
        O_ALLOW_CORE,
        O_START_US,
        O_START_CPU_US,
        O_PARENT_CPU_US,
        O_SECCOMP,
        O_NO_SECCOMP,
        O_STRICT,
        O_VERSION,
        O_HELP
    };
    static const struct option opts[] = {
            {"api-sock", required_argument, NULL, O_SOCK},
            {"id", required_argument, NULL, O_ID},
            {"config-file", required_argument, NULL, O_CONFIG},
            {"no-api", no_argument, NULL, O_NO_API},
            {"boot-timer", no_argument, NULL, O_BOOT_TIMER},
            {"log-path", required_argument, NULL, O_LOG_PATH},
            {"level", required_argument, NULL, O_LEVEL},
            {"show-level", no_argument, NULL, O_SHOW_LEVEL},
            {"show-log-origin", no_argument, NULL, O_SHOW_ORIGIN},
            {"metrics-path", required_argument, NULL, O_METRICS},
            {"http-api-max-payload-size", required_argument, NULL, O_PAYLOAD},
            {"http-api-max-connections", required_argument, NULL, O_MAX_CONNS},
            {"http-api-idle-timeout", required_argument, NULL, O_IDLE_TIMEOUT},
            {"http-api-idle-give-way", no_argument, NULL, O_IDLE_GIVE_WAY},
            {"allow-core-dumps", no_argument, NULL, O_ALLOW_CORE},
            {"start-time-us", required_argument, NULL, O_START_US},
            {"start-time-cpu-us", required_argument, NULL, O_START_CPU_US},
            {"parent-cpu-time-us", required_argument, NULL, O_PARENT_CPU_US},
            {"seccomp-filter", required_argument, NULL, O_SECCOMP},
            {"no-seccomp", no_argument, NULL, O_NO_SECCOMP},
            {"strict-sandbox", no_argument, NULL, O_STRICT},
            {"version", no_argument, NULL, O_VERSION},
            {"help", no_argument, NULL, O_HELP},
            {NULL, 0, NULL, 0},
    };
    uint64_t v;
    int c, ret = 0;

    memset(a, 0, sizeof(*a));
    a->api_sock = API_SOCK_DEFAULT;
    a->id = API_INSTANCE_ID_DEFAULT;
    a->max_payload = API_PAYLOAD_MAX_DEFAULT;
    a->max_connections = API_CONN_LIMIT;
    a->idle_timeout_s = API_IDLE_TIMEOUT_S;
    a->level = API_LOG_INFO;
    optind = 1;
    opterr = 0;
    while (!ret && (c = getopt_long_only(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case O_SOCK:
            a->api_sock = optarg;
            break;
        case O_ID:
            if (!instance_id_valid(optarg))
                return errf(err, errlen, -EINVAL,
                            "Arguments parsing error: Invalid instance ID: '%.80s' (1 to 64 "
                            "characters, alphanumeric or '-').",
                            optarg);
            a->id = optarg;
            break;
        case O_CONFIG:
            a->config_file = optarg;
            break;
        case O_NO_API:
            a->no_api = true;
            break;
        case O_BOOT_TIMER:
            a->boot_timer = true;
            break;
        case O_LOG_PATH:
            a->log_path = optarg;
            break;
        case O_LEVEL:
            if (level_parse(optarg, &a->level))
                return errf(err, errlen, -EINVAL,
                            "Arguments parsing error: --level '%.32s' is not one of Off, "
                            "Error, Warning, Info, Debug, Trace.",
                            optarg);
            a->has_level = true;
            break;
        case O_SHOW_LEVEL:
            a->show_level = true;
            break;
        case O_SHOW_ORIGIN:
            a->show_log_origin = true;
            break;
        case O_METRICS:
            a->metrics_path = optarg;
            break;
        case O_PAYLOAD:
            ret = number("http-api-max-payload-size", optarg, &v, err, errlen);
            if (!ret && (v == 0 || v > (64u << 20)))
                return errf(err, errlen, -EINVAL,
                            "Arguments parsing error: --http-api-max-payload-size must be "
                            "1 to %u bytes.",
                            64u << 20);
            a->max_payload = (size_t)v;
            break;
        case O_MAX_CONNS:
        case O_IDLE_TIMEOUT: {
            bool conns = c == O_MAX_CONNS;
            uint64_t max = conns ? API_CONN_LIMIT_MAX : API_IDLE_TIMEOUT_MAX_S;
            const char *name = conns ? "http-api-max-connections" : "http-api-idle-timeout";
            ret = number(name, optarg, &v, err, errlen);
            if (!ret && (v == 0 || v > max))
                return errf(err, errlen, -EINVAL,
                            "Arguments parsing error: --%s must be 1 to %llu.", name,
                            (unsigned long long)max);
            *(conns ? &a->max_connections : &a->idle_timeout_s) = (unsigned)v;
            break;
        }
        case O_IDLE_GIVE_WAY:
            a->idle_give_way = true;
            break;
        case O_ALLOW_CORE:
            a->allow_core_dumps = true;
            break;
        case O_START_US:
            ret = number("start-time-us", optarg, &a->start_time_us, err, errlen);
            a->has_start_time_us = true;
            break;
        case O_START_CPU_US:
            ret = number("start-time-cpu-us", optarg, &a->start_time_cpu_us, err, errlen);
            a->has_start_time_cpu_us = true;
            break;
        case O_PARENT_CPU_US:
            ret = number("parent-cpu-time-us", optarg, &a->parent_cpu_time_us, err, errlen);
            a->has_parent_cpu_time_us = true;
            break;
        case O_SECCOMP:
            a->seccomp_filter = optarg;
            break;
        case O_NO_SECCOMP:
            a->no_seccomp = true;
            break;
        case O_STRICT:
            a->strict_sandbox = true;
            break;
        case O_VERSION:
            return 2;
        case O_HELP:
            return 1;
        case ':':
            return errf(err, errlen, -EINVAL, "Arguments parsing error: %s needs a value.",
                        argv[optind - 1]);
        default:
            return errf(err, errlen, -EINVAL,
                        "Arguments parsing error: Found argument '%.80s' which wasn't "
                        "expected, or isn't valid in this context.",
                        argv[optind - 1]);
        }
    }
    if (ret)
        return ret;
    if (optind < argc)
        return errf(err, errlen, -EINVAL,
                    "Arguments parsing error: Found argument '%.80s' which wasn't expected.",
                    argv[optind]);
    if (a->no_api && !a->config_file)
        return errf(err, errlen, -EINVAL,
                    "Arguments parsing error: --no-api requires --config-file.");
    if (a->seccomp_filter && a->no_seccomp)
        return errf(err, errlen, -EINVAL,
                    "Arguments parsing error: --seccomp-filter and --no-seccomp conflict.");
    return 0;
}
