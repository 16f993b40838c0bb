/* Fuzz target: API request routing + strict JSON body validation (api-socket/routes.c,
 * bodies.c) and the controller's phase rules (ctl.c) with a stub VMM. Input: one byte picks
 * the method, then the path up to the first newline, then the body. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../api-socket/api.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int op_start(void *o, const struct vm_config *cfg, char *err, size_t errlen)
{
    (void)o, (void)cfg, (void)err, (void)errlen;
    return 0;
}
static int op_pause(void *o, bool p, char *err, size_t errlen)
{
    (void)o, (void)p, (void)err, (void)errlen;
    return 0;
}
static int op_plain(void *o, char *err, size_t errlen)
{
    (void)o, (void)err, (void)errlen;
    return 0;
}
static int op_logger(void *o, const struct api_logger *l, char *err, size_t errlen)
{
    (void)o, (void)l, (void)err, (void)errlen;
    return 0;
}
static int op_metrics(void *o, const struct api_metrics *m, char *err, size_t errlen)
{
    (void)o, (void)m, (void)err, (void)errlen;
    return 0;
}
static int op_drive(void *o, const struct vm_drive *d, const char *path, const struct vm_bucket *bw,
                    const struct vm_bucket *bops, char *err, size_t errlen)
{
    (void)o, (void)d, (void)path, (void)bw, (void)bops, (void)err, (void)errlen;
    return 0;
}
static int op_net(void *o, const struct vm_net *n, const struct vm_bucket *rx_bw,
                  const struct vm_bucket *rx_ops, const struct vm_bucket *tx_bw,
                  const struct vm_bucket *tx_ops, char *err, size_t errlen)
{
    (void)o, (void)n, (void)rx_bw, (void)rx_ops, (void)tx_bw, (void)tx_ops, (void)err, (void)errlen;
    return 0;
}
static const struct api_vmm_ops ops = {
        .start = op_start,
        .pause = op_pause,
        .ctrl_alt_del = op_plain,
        .flush_metrics = op_plain,
        .logger = op_logger,
        .metrics = op_metrics,
        .update_drive = op_drive,
        .check_net = NULL, /* the TAP is not opened: the configuration's checks only */
        .update_net = op_net,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const methods[] = {"GET", "PUT", "PATCH", "DELETE", "POST"};
    static struct api_request req;
    static struct api_ctl ctl;
    char err[API_ERR_MAX];

    if (size < 1)
        return 0;
    const char *method = methods[data[0] % 5];
    bool started = data[0] & 0x80;
    char *text = malloc(size);
    if (!text)
        return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    char *nl = memchr(text, '\n', size - 1);
    const char *body = "";
    size_t blen = 0;
    if (nl) {
        *nl = '\0';
        body = nl + 1;
        blen = size - 1 - (size_t)(body - text);
    }
    err[0] = '\0';
    int ret = api_route(method, text, body, blen, &req, err, sizeof(err));
    if (ret && !err[0])
        abort(); /* every refusal carries a message */
    if (!ret && req.kind != API_REQ_BOOT_SOURCE && req.kind != API_REQ_PUT_DRIVE) {
        struct api_response resp;
        ctl_init(&ctl, "fuzz", "0", &ops, NULL);
        ctl.state = started ? API_VM_RUNNING : API_VM_NOT_STARTED;
        ctl_handle(&ctl, &req, &resp);
        if (resp.status != 200 && resp.status != 204 && resp.status != 400)
            abort();
        if ((resp.status == 204) != (resp.body == NULL))
            abort();
        api_response_free(&resp);
        ctl_free(&ctl);
    }
    free(text);
    return 0;
}
