// The reader of `--server-config FILE` (TOML; keys are the long flag names). CLI11's own reader
// ignores what it does not know and takes malformed values as some string, so a typo
// (`api_keys_file`, `api-key-file`, an unclosed quote) used to start a server without the keys
// the operator wrote down. This one fails closed: any line it cannot read exactly, a key that
// is no flag of the program (with a suggestion), a key given twice or a [section] is an error
// naming the file, the line and the key; only then does CLI11 apply the settings.
#pragma once
#include <CLI/CLI.hpp>

#include <string>
#include <vector>

namespace pipellm::coord {

class StrictConfig : public CLI::ConfigTOML {
 public:
  // `app`: the program whose long flag names are the valid keys (read at parse time).
  explicit StrictConfig(const CLI::App* app) : app_(app) {}
  std::vector<CLI::ConfigItem> from_config(std::istream& input) const override;

 private:
  const CLI::App* app_;
};

// The checks alone, on a file's text (`source` names it in errors): throws CLI::ConversionError
// with "SOURCE:LINE: ..." for the first problem. `keys` are the accepted setting names.
void check_server_config(const std::string& text, const std::vector<std::string>& keys, const std::string& source);

}  // namespace pipellm::coord
