// `pipellm import-raw`: writes a GGUF from raw weights + manifest + HF tokenizer.json, the
// export format of tools/train_default_model.py (how models/default.gguf is made).
#include <cstdio>
#include <string>

#include "base/error.h"
#include "cli/commands.h"
#include "engine/model_gen/raw_import.h"
#include "engine/util/thread_pool.h"

namespace pipellm::cli {
namespace {

void usage(FILE* out) {
  std::fprintf(out,
               "usage: pipellm import-raw --manifest M.json --weights W.bin --tokenizer tokenizer.json\n"
               "                          [--quant F32|F16|Q8_0] OUT.gguf\n"
               "  Matrices are written as --quant (default Q8_0), vectors (norms) as F32.\n"
               "  See tools/README.md for the manifest format and how the default model is built.\n");
}

}  // namespace

int cmd_import_raw(int argc, char** argv) {
  RawImportOptions opt;
  std::string out;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto val = [&]() -> std::string {
        if (i + 1 >= argc) throw InvalidArgument(a + " needs a value");
        return argv[++i];
      };
      if (a == "-h" || a == "--help") {
        usage(stdout);
        return 0;
      } else if (a == "--manifest") {
        opt.manifest = val();
      } else if (a == "--weights") {
        opt.weights = val();
      } else if (a == "--tokenizer") {
        opt.tokenizer = val();
      } else if (a == "--quant") {
        const std::string q = val();
        const auto t = tensor_type_from_name(q);
        if (!t || (*t != TensorType::F32 && *t != TensorType::F16 && *t != TensorType::Q8_0))
          throw InvalidArgument("--quant: '" + q + "' (expected F32, F16 or Q8_0)");
        opt.matrix_type = *t;
      } else if (!a.empty() && a[0] == '-') {
        throw InvalidArgument("unknown option " + a);
      } else if (out.empty()) {
        out = a;
      } else {
        throw InvalidArgument("more than one output file: " + out + ", " + a);
      }
    }
    if (opt.manifest.empty() || opt.weights.empty() || opt.tokenizer.empty() || out.empty())
      throw InvalidArgument("--manifest, --weights, --tokenizer and OUT.gguf are all needed");
  } catch (const InvalidArgument& e) {
    std::fprintf(stderr, "pipellm import-raw: %s\n", e.what());
    usage(stderr);
    return 2;
  }
  ThreadPool pool;
  import_raw_model(opt, out, pool);
  std::printf("wrote %s (%s matrices)\n", out.c_str(), tensor_type_name(opt.matrix_type));
  return 0;
}

}  // namespace pipellm::cli
