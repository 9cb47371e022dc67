#include "engine/link/coordinator_link.h"

#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace pipellm::link {

namespace {

const char* const kHeadMessageNames[] = {"Hello", "Token", "Finished", "Error", "StageStats", "Progress"};

// Compares every byte whatever the first difference (no timing hint about the secret).
bool same_secret(const std::string& a, const std::string& b) {
  if (a.empty() || a.size() != b.size()) return false;
  unsigned diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i]) ^ static_cast<unsigned char>(b[i]);
  return diff == 0;
}

}  // namespace

std::string new_link_secret() {
  unsigned char bytes[16];
  size_t got = 0;
  while (got < sizeof bytes) {
    const ssize_t n = ::getrandom(bytes + got, sizeof bytes - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(std::string("link: cannot make a secret: getrandom: ") + std::strerror(errno));
    }
    got += static_cast<size_t>(n);
  }
  static const char hex[] = "0123456789abcdef";
  std::string s;
  for (unsigned char b : bytes) {
    s += hex[b >> 4];
    s += hex[b & 15];
  }
  return s;
}

std::string link_secret_from_env() {
  const char* v = std::getenv(kLinkSecretEnv);
  return v ? v : "";
}

CoordinatorLink::CoordinatorLink(const std::string& listen, std::chrono::milliseconds handshake)
    : listener_(HostPort::parse(listen)), handshake_(handshake) {}

void CoordinatorLink::take_new_connections(int timeout_ms) {
  for (;;) {
    std::string peer;
    Fd fd = listener_.accept(timeout_ms, &peer);
    if (!fd.valid()) return;
    pending_.push_back({std::make_shared<FrameConnection>(std::move(fd)), peer, std::chrono::steady_clock::now()});
    timeout_ms = 0;  // then whatever else is waiting
  }
}

void CoordinatorLink::refuse(Pending& p, const std::string& why) {
  p.conn->shutdown();
  p.conn.reset();
  if (on_refused_) on_refused_("link: refused the connection from " + p.peer + ": " + why);
}

std::optional<HelloMsg> CoordinatorLink::check_pending(Pending& p, const std::string& secret) {
  auto body = p.conn->recv_frame(0);
  if (!body) {
    if (std::chrono::steady_clock::now() - p.since >= handshake_) {
      throw LinkError("no Hello within " + std::to_string(handshake_.count()) + " ms");
    }
    return std::nullopt;
  }
  HeadMessage m = decode_head_message(body->data(), body->size());
  auto* hello = std::get_if<HelloMsg>(&m);
  if (hello == nullptr) throw LinkError(std::string("it sent ") + kHeadMessageNames[m.index()] + " before Hello");
  if (!same_secret(hello->secret, secret)) {
    throw LinkError(std::string("its Hello has ") + (hello->secret.empty() ? "no" : "the wrong") +
                    " secret (not the head of this launch)");
  }
  return std::move(*hello);
}

std::optional<HelloMsg> CoordinatorLink::accept_head(const std::string& secret, int timeout_ms) {
  if (secret.empty()) throw InvalidArgument("link: accept_head needs the launch's secret");
  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + std::chrono::milliseconds(timeout_ms < 0 ? 0 : timeout_ms);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
    // Short waits on the listener, so that pending connections are read soon after they write.
    take_new_connections(pending_.empty() ? static_cast<int>(std::max<long long>(0, std::min<long long>(left, 100)))
                                          : static_cast<int>(std::max<long long>(0, std::min<long long>(left, 10))));
    std::optional<HelloMsg> head;
    for (Pending& p : pending_) {
      if (head) break;
      try {
        head = check_pending(p, secret);
        if (head) {
          std::lock_guard<std::mutex> lock(mu_);
          if (conn_) conn_->shutdown();
          conn_ = p.conn;
          p.conn.reset();
        }
      } catch (const LinkError& e) {
        refuse(p, e.what());
      }
    }
    if (head) {
      refuse_newcomers();  // exactly one head per launch
      return head;
    }
    pending_.erase(std::remove_if(pending_.begin(), pending_.end(), [](const Pending& p) { return !p.conn; }),
                   pending_.end());
    if (clock::now() >= deadline) return std::nullopt;
  }
}

void CoordinatorLink::refuse_newcomers() {
  take_new_connections(0);
  for (Pending& p : pending_) {
    if (p.conn) refuse(p, "a head is already connected for this launch");
  }
  pending_.clear();
}

bool CoordinatorLink::connected() const { return current() != nullptr; }

std::shared_ptr<FrameConnection> CoordinatorLink::current() const {
  std::lock_guard<std::mutex> lock(mu_);
  return conn_;
}

void CoordinatorLink::send(const CoordinatorMessage& m) {
  auto c = current();
  if (!c) throw LinkClosed("link: no head stage connected");
  c->send_frame(encode(m));
}

std::optional<HeadMessage> CoordinatorLink::receive(int timeout_ms) {
  auto c = current();
  if (!c) throw LinkClosed("link: no head stage connected");
  try {
    auto body = c->recv_frame(timeout_ms);
    if (!body) return std::nullopt;
    return decode_head_message(body->data(), body->size());
  } catch (const LinkError&) {
    // Closed or malformed: this connection is finished either way.
    std::lock_guard<std::mutex> lock(mu_);
    if (conn_ == c) {
      conn_->shutdown();
      conn_.reset();
    }
    throw;
  }
}

void CoordinatorLink::disconnect() {
  std::lock_guard<std::mutex> lock(mu_);
  if (conn_) conn_->shutdown();
  conn_.reset();
}

std::unique_ptr<HeadLink> HeadLink::connect(const std::string& address, const HelloMsg& hello, int timeout_ms) {
  std::unique_ptr<HeadLink> h(new HeadLink(tcp_connect(HostPort::parse(address), timeout_ms)));
  h->send(hello);
  return h;
}

void HeadLink::send(const HeadMessage& m) { conn_->send_frame(encode(m)); }

std::vector<CoordinatorMessage> HeadLink::poll(int timeout_ms) {
  std::vector<CoordinatorMessage> out;
  auto body = conn_->recv_frame(timeout_ms);
  while (body) {
    out.push_back(decode_coordinator_message(body->data(), body->size()));
    body = conn_->recv_frame(0);
  }
  return out;
}

}  // namespace pipellm::link
