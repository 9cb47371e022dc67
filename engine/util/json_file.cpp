#include "engine/util/json_file.h"

#include <fstream>
#include <sstream>

#include "base/error.h"

namespace pipellm {

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(path + ": not JSON: " + e.what());
  }
}

}  // namespace pipellm
