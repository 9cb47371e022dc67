#include "coordinator/http_tls.h"

#include <poll.h>

#include <algorithm>
#include <cerrno>

#include "base/error.h"

#ifdef PIPELLM_HAVE_OPENSSL
#include <openssl/err.h>
#include <openssl/ssl.h>
#endif

namespace pipellm::coord {

#ifdef PIPELLM_HAVE_OPENSSL

namespace {

// OpenSSL's queued reasons, oldest first; clears the queue.
std::string ssl_errors() {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    out += out.empty() ? "" : "; ";
    out += buf;
  }
  return out.empty() ? "unknown reason" : out;
}

}  // namespace

struct TlsContext::Impl {
  SSL_CTX* ctx = nullptr;
  ~Impl() { SSL_CTX_free(ctx); }
};

TlsContext::TlsContext(const std::string& cert_file, const std::string& key_file) : impl_(std::make_unique<Impl>()) {
  ERR_clear_error();
  impl_->ctx = SSL_CTX_new(TLS_server_method());
  if (!impl_->ctx) throw Error("http: cannot create a TLS context: " + ssl_errors());
  SSL_CTX* c = impl_->ctx;
  SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
  // Renegotiation lets a client make the server redo expensive handshakes on one connection.
  SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  // Writes from the gate's workers may be partial and retried from a moved buffer.
  SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (SSL_CTX_use_certificate_chain_file(c, cert_file.c_str()) != 1) {
    throw Error("http: cannot load the TLS certificate '" + cert_file + "': " + ssl_errors());
  }
  if (SSL_CTX_use_PrivateKey_file(c, key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    throw Error("http: cannot load the TLS key '" + key_file + "': " + ssl_errors());
  }
  if (SSL_CTX_check_private_key(c) != 1) {
    throw Error("http: the TLS key '" + key_file + "' does not match the certificate '" + cert_file + "'");
  }
}

TlsContext::~TlsContext() = default;

struct TlsSession::Impl {
  SSL* ssl = nullptr;
  ~Impl() { SSL_free(ssl); }
};

TlsSession::TlsSession(const TlsContext& ctx, int fd) : impl_(std::make_unique<Impl>()), want_(POLLIN) {
  impl_->ssl = SSL_new(ctx.impl().ctx);
  if (!impl_->ssl || SSL_set_fd(impl_->ssl, fd) != 1) throw Error("http: cannot start a TLS session: " + ssl_errors());
  SSL_set_accept_state(impl_->ssl);
}

TlsSession::~TlsSession() = default;

// Maps an SSL_* return value to the recv/send convention (see the header).
ssize_t TlsSession::result(int r) {
  if (r > 0) return r;
  switch (SSL_get_error(impl_->ssl, r)) {
    case SSL_ERROR_WANT_READ:
      want_ = POLLIN;
      errno = EAGAIN;
      return -1;
    case SSL_ERROR_WANT_WRITE:
      want_ = POLLOUT;
      errno = EAGAIN;
      return -1;
    case SSL_ERROR_ZERO_RETURN:  // close_notify from the peer
      return 0;
    default:  // a protocol error, or the peer went away without close_notify
      ERR_clear_error();
      errno = EIO;
      return -1;
  }
}

int TlsSession::handshake() {
  ERR_clear_error();
  const ssize_t r = result(SSL_do_handshake(impl_->ssl));
  if (r > 0) {
    done_ = true;
    return 1;
  }
  if (r == 0) errno = EIO;  // closed during the handshake
  return -1;
}

ssize_t TlsSession::read(char* buf, size_t n) {
  ERR_clear_error();
  return result(SSL_read(impl_->ssl, buf, static_cast<int>(std::min<size_t>(n, 1 << 30))));
}

ssize_t TlsSession::write(const char* buf, size_t n) {
  ERR_clear_error();
  return result(SSL_write(impl_->ssl, buf, static_cast<int>(std::min<size_t>(n, 1 << 30))));
}

size_t TlsSession::pending() const { return static_cast<size_t>(SSL_pending(impl_->ssl)); }

void TlsSession::close_notify() {
  if (done_) (void)SSL_shutdown(impl_->ssl);
  ERR_clear_error();
}

#else  // no OpenSSL: TLS is refused when configured, so no session is ever made.

struct TlsContext::Impl {};
TlsContext::TlsContext(const std::string&, const std::string&) {
  throw Error("http: TLS requested but this build has no OpenSSL (install libssl-dev and rebuild)");
}
TlsContext::~TlsContext() = default;
struct TlsSession::Impl {};
TlsSession::TlsSession(const TlsContext&, int) : want_(POLLIN) { throw Error("http: no TLS in this build"); }
TlsSession::~TlsSession() = default;
ssize_t TlsSession::result(int) { return -1; }
int TlsSession::handshake() { return -1; }
ssize_t TlsSession::read(char*, size_t) { return -1; }
ssize_t TlsSession::write(const char*, size_t) { return -1; }
size_t TlsSession::pending() const { return 0; }
void TlsSession::close_notify() {}

#endif

}  // namespace pipellm::coord
