// The HTTP front door when cpp-httplib is not available at build time: asking for it fails
// with a message saying what to install.
#include "coordinator/http_server.h"

namespace pipellm::coord {

struct HttpFrontDoor::Impl {};

HttpFrontDoor::HttpFrontDoor(FrontDoorContext, HttpOptions opt) {
  throw Error("http: cannot listen on " + opt.listen +
              ": this build has no HTTP front door (install cpp-httplib, e.g. libcpp-httplib-dev, and rebuild)");
}
HttpFrontDoor::~HttpFrontDoor() = default;
int HttpFrontDoor::port() const { return 0; }
bool HttpFrontDoor::tls() const { return false; }
void HttpFrontDoor::stop() {}

}  // namespace pipellm::coord
