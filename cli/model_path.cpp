#include "cli/model_path.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace pipellm::cli {

std::string model_path_problem(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    switch (errno) {
      case ENOENT: {
        struct stat l {};
        return ::lstat(path.c_str(), &l) == 0 && S_ISLNK(l.st_mode) ? "is a symlink to nothing (dangling)" : "does not exist";
      }
      case ELOOP: return "is a symlink loop";
      case ENOTDIR: return "does not exist (a part of the path is not a directory)";
      case ENAMETOOLONG: return "is too long a path";
      default: return std::string("cannot be read: ") + std::strerror(errno);
    }
  }
  if (S_ISDIR(st.st_mode)) return "is a directory, not a GGUF file";
  if (S_ISCHR(st.st_mode)) return "is a character device, not a regular file";
  if (S_ISBLK(st.st_mode)) return "is a block device, not a regular file";
  if (S_ISFIFO(st.st_mode)) return "is a pipe (FIFO), not a regular file";
  if (S_ISSOCK(st.st_mode)) return "is a socket, not a regular file";
  if (!S_ISREG(st.st_mode)) return "is not a regular file";
  if (::access(path.c_str(), R_OK) != 0) return std::string("cannot be read: ") + std::strerror(errno);
  return "";
}

}  // namespace pipellm::cli
