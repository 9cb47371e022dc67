// `pipellm import-raw`: writes a GGUF from raw weights + manifest + HF tokenizer.json, the
// export format of tools/train_default_model.py (how models/default.gguf is made).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "base/error.h"
#include "cli/commands.h"
#include "engine/model_gen/raw_import.h"
#include "engine/util/thread_pool.h"
#include "flags/llama_flags.h"

namespace pipellm::cli {

int cmd_import_raw(int argc, char** argv) {
  RawImportOptions opt;
  std::string out;
  CLI::App app{"pipellm import-raw: writes a GGUF from raw trained weights, their manifest and a Hugging Face "
               "tokenizer.json (tools/train_default_model.py's export; tools/README.md describes the format).",
               "pipellm import-raw"};
  app.add_option("--manifest", opt.manifest, "hyperparameters and tensor list (JSON)")->type_name("FILE")->required();
  app.add_option("--weights", opt.weights, "the tensors back to back")->type_name("FILE")->required();
  app.add_option("--tokenizer", opt.tokenizer, "Hugging Face tokenizer.json")->type_name("FILE")->required();
  app.add_option_function<std::string>(
      "--quant",
      [&opt](const std::string& q) {
        const auto t = tensor_type_from_name(q);
        if (!t || (*t != TensorType::F32 && *t != TensorType::F16 && *t != TensorType::Q8_0))
          throw CLI::ValidationError("--quant", "'" + q + "' (expected F32, F16 or Q8_0)");
        opt.matrix_type = *t;
      },
      "type of the matrices: F32, F16 or Q8_0 (default); vectors (norms) stay F32")
      ->type_name("TYPE");
  app.add_option("OUT", out, "the GGUF file to write")->type_name("")->required();
  if (auto code = flags::parse(app, argc, argv)) return *code;
  ThreadPool pool;
  import_raw_model(opt, out, pool);
  std::printf("wrote %s (%s matrices)\n", out.c_str(), tensor_type_name(opt.matrix_type));
  return 0;
}

}  // namespace pipellm::cli
