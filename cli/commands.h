// Sub-commands of the `pipellm` CLI; each lives in its own cmd_<name>.cpp.
// Exit codes: 0 success, 1 bad input file / runtime failure, 2 usage error (bad flag or value).
#pragma once

namespace pipellm::cli {

int cmd_inspect(int argc, char** argv);
int cmd_tokenize(int argc, char** argv);
int cmd_mkmodel(int argc, char** argv);
int cmd_quantize(int argc, char** argv);
int cmd_import_raw(int argc, char** argv);
int cmd_generate(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_plan(int argc, char** argv);

}  // namespace pipellm::cli
