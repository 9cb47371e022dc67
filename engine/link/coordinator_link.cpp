#include "engine/link/coordinator_link.h"

namespace pipellm::link {

CoordinatorLink::CoordinatorLink(const std::string& listen) : listener_(HostPort::parse(listen)) {}

bool CoordinatorLink::accept(int timeout_ms) {
  Fd fd = listener_.accept(timeout_ms);
  if (!fd.valid()) return false;
  auto conn = std::make_shared<FrameConnection>(std::move(fd));
  std::lock_guard<std::mutex> lock(mu_);
  if (conn_) conn_->shutdown();
  conn_ = std::move(conn);
  return true;
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
