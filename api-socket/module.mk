# api-socket/: Firecracker's HTTP API on a Unix socket (libmicrohttpd + jansson).
# The sources are linked into build/ember by vmm/module.mk (EMBER_SRCS); here: their tests.
API_PURE_SRCS := api-socket/routes.c api-socket/bodies.c

UNIT_DEPS_test_api_routes := $(API_PURE_SRCS)
UNIT_LIBS_test_api_routes := -ljansson
UNIT_DEPS_test_api_ctl    := $(API_PURE_SRCS) api-socket/ctl.c api-socket/config.c
UNIT_LIBS_test_api_ctl    := -ljansson

FUZZ_DEPS_fuzz_api_routes := $(API_PURE_SRCS) api-socket/ctl.c api-socket/config.c
FUZZ_LIBS_fuzz_api_routes := -ljansson
