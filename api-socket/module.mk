# api-socket/: Firecracker's HTTP API on a Unix socket (libmicrohttpd + jansson).
# The sources are linked into build/ember by vmm/module.mk (EMBER_SRCS); here: their tests.
API_PURE_SRCS := api-socket/routes.c api-socket/bodies.c api-socket/ctl.c api-socket/config.c \
	api-socket/metrics.c vmm/config.c vmm/log.c

UNIT_DEPS_test_api_routes := $(API_PURE_SRCS)
UNIT_LIBS_test_api_routes := -ljansson
UNIT_DEPS_test_api_ctl    := $(API_PURE_SRCS)
UNIT_LIBS_test_api_ctl    := -ljansson
UNIT_DEPS_test_api_args   := $(API_PURE_SRCS) api-socket/args.c
UNIT_LIBS_test_api_args   := -ljansson

FUZZ_DEPS_fuzz_api_routes := $(API_PURE_SRCS)
FUZZ_LIBS_fuzz_api_routes := -ljansson

# Token-bucket bounds (F6): the body parser's limits and the bucket behind them.
UNIT_DEPS_test_api_tbucket := $(API_PURE_SRCS) virtio/tbucket.c
UNIT_LIBS_test_api_tbucket := -ljansson
FUZZ_DEPS_fuzz_api_tbucket := $(API_PURE_SRCS) virtio/tbucket.c
FUZZ_LIBS_fuzz_api_tbucket := -ljansson

# The logger's Firecracker line format (vmm/log.c, owned with this issue).
UNIT_DEPS_test_api_log    := vmm/log.c
UNIT_LIBS_test_api_log    := -lpthread

# Metrics lines and the VMM's counters in them.
UNIT_DEPS_test_api_metrics := api-socket/metrics.c
UNIT_LIBS_test_api_metrics := -ljansson
