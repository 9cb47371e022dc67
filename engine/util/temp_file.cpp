#include "engine/util/temp_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "base/error.h"

namespace pipellm {

TempFile::TempFile(const std::string& prefix, const std::string& suffix, const std::string& content) {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/" + prefix + "XXXXXX" + suffix;
  std::vector<char> name(pattern.begin(), pattern.end());
  name.push_back('\0');
  const int fd = ::mkstemps(name.data(), static_cast<int>(suffix.size()));
  if (fd < 0) throw Error("cannot create a temporary file like " + pattern + ": " + std::strerror(errno));
  path_ = name.data();
  size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string why = std::strerror(errno);
      ::close(fd);
      ::unlink(path_.c_str());
      throw Error("cannot write " + path_ + ": " + why);
    }
    done += static_cast<size_t>(n);
  }
  if (::close(fd) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(path_.c_str());
    throw Error("cannot write " + path_ + ": " + why);
  }
}

TempFile::~TempFile() { ::unlink(path_.c_str()); }

}  // namespace pipellm
