// What: placeholder for the Hugging Face importer (issue #15, branch hf).
#include "io/hf/hf_import.h"

#include "core/error.h"

namespace mt::io::hf {

core::ModelConfig read_model_config(const std::string& dir) {
  throw core::Error("Hugging Face import is not built yet (" + dir + ")");
}
void check_model_config(const core::ModelConfig&, const core::ModelConfig&, const std::string&) {}
void load_weights(const std::string& dir, parallel::Model&) {
  throw core::Error("Hugging Face import is not built yet (" + dir + ")");
}

}  // namespace mt::io::hf
