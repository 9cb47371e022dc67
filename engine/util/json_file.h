// Reading a whole JSON file, with errors that name the file.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace pipellm {

// Error when the file cannot be opened, FormatError when it is not JSON.
nlohmann::json read_json_file(const std::string& path);

}  // namespace pipellm
