# lib/https's TLS errors in words an installer can act on (they reach the setup page's cloud status).
import https


def test_a_server_that_hangs_up_mid_handshake_is_not_called_untrusted():
    e = https._tls_error("cloud.example", OSError(-0x7280, "MBEDTLS_ERR_SSL_CONN_EOF"))
    assert e.kind == "tls" and "closed the connection during the handshake" in str(e)
    assert "not trusted" not in str(e)


def test_a_failed_verification_says_the_certificate_or_host_name_is_not_trusted():
    for err in (OSError(-0x2700), OSError(-0x3000, "X509 - Certificate verification failed")):
        assert "certificate or host name not trusted" in str(https._tls_error("cloud.example", err))
