/* No TLS in the VMM: libmicrohttpd is linked statically (see vmm/module.mk) and its TLS code,
 * which the API socket never enables (a Unix socket, no MHD_USE_TLS), is bound to these
 * stubs instead of GnuTLS. Loading GnuTLS and its dependency chain (p11-kit, nettle, gmp,
 * idn2, ...) and running its constructor cost ~2 ms of CPU on every process start, and kept a
 * TLS stack in the address space of a process that must stay small. Only the library's
 * global init/deinit run (from libmicrohttpd's constructor); everything else fails. */
#include <stddef.h>

#define TLS_UNAVAILABLE (-1250) /* GNUTLS_E_UNIMPLEMENTED_FEATURE */

/* Each stub takes no arguments that it looks at: it is never called with TLS off. */
#define NO_TLS(name)            \
    int name(void);             \
    int name(void)              \
    {                           \
        return TLS_UNAVAILABLE; \
    }

int gnutls_global_init(void);
int gnutls_global_init(void)
{
    return 0;
}

void gnutls_global_deinit(void);
void gnutls_global_deinit(void)
{
}

/* gnutls_malloc is a function pointer variable in GnuTLS. */
extern void *gnutls_malloc;
void *gnutls_malloc = NULL;

NO_TLS(gnutls_alpn_set_protocols)
NO_TLS(gnutls_bye)
NO_TLS(gnutls_certificate_allocate_credentials)
NO_TLS(gnutls_certificate_free_credentials)
NO_TLS(gnutls_certificate_server_set_request)
NO_TLS(gnutls_certificate_set_dh_params)
NO_TLS(gnutls_certificate_set_retrieve_function2)
NO_TLS(gnutls_certificate_set_retrieve_function3)
NO_TLS(gnutls_certificate_set_x509_key_mem)
NO_TLS(gnutls_certificate_set_x509_key_mem2)
NO_TLS(gnutls_certificate_set_x509_trust_mem)
NO_TLS(gnutls_cipher_get)
NO_TLS(gnutls_credentials_set)
NO_TLS(gnutls_deinit)
NO_TLS(gnutls_dh_params_deinit)
NO_TLS(gnutls_dh_params_import_pkcs3)
NO_TLS(gnutls_dh_params_init)
NO_TLS(gnutls_handshake)
NO_TLS(gnutls_init)
NO_TLS(gnutls_priority_deinit)
NO_TLS(gnutls_priority_init)
NO_TLS(gnutls_priority_set)
NO_TLS(gnutls_protocol_get_version)
NO_TLS(gnutls_psk_allocate_server_credentials)
NO_TLS(gnutls_psk_free_server_credentials)
NO_TLS(gnutls_psk_set_server_credentials_function)
NO_TLS(gnutls_record_check_pending)
NO_TLS(gnutls_record_get_direction)
NO_TLS(gnutls_record_recv)
NO_TLS(gnutls_record_send)
NO_TLS(gnutls_session_get_ptr)
NO_TLS(gnutls_session_set_ptr)
NO_TLS(gnutls_strerror)
NO_TLS(gnutls_transport_set_int2)
