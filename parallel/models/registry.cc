// What: the model registry (see registry.h). Adding a built-in architecture is one line in
// builtin() below (and its own model file).
#include "parallel/models/registry.h"

#include <algorithm>
#include <map>
#include <mutex>

#include <fmt/format.h>

#include "core/error.h"
#include "parallel/models/gpt2.h"
#include "parallel/models/llama.h"

namespace mt::parallel {

namespace {

std::map<std::string, ArchitectureFactory>& table() {
  static std::map<std::string, ArchitectureFactory> t = [] {
    std::map<std::string, ArchitectureFactory> builtin;
    builtin["gpt2"] = [](const core::ModelConfig& c) { return std::make_shared<Gpt2Architecture>(c); };
    builtin["llama"] = [](const core::ModelConfig& c) { return std::make_shared<LlamaArchitecture>(c); };
    return builtin;
  }();
  return t;
}

std::mutex& table_mutex() {
  static std::mutex m;
  return m;
}

}  // namespace

std::shared_ptr<const Architecture> make_architecture(const core::ModelConfig& cfg) {
  ArchitectureFactory f;
  {
    std::lock_guard<std::mutex> lock(table_mutex());
    const auto it = table().find(cfg.arch);
    if (it != table().end()) f = it->second;
  }
  if (!f) {
    const auto names = architecture_names();
    throw core::Error(fmt::format("unknown model architecture '{}'", cfg.arch))
        .with_yaml("model.arch")
        .with_hint(fmt::format("model.arch is one of: {}", fmt::join(names, ", ")));
  }
  return f(cfg);
}

void register_architecture(const std::string& name, ArchitectureFactory factory) {
  std::lock_guard<std::mutex> lock(table_mutex());
  table()[name] = std::move(factory);
}

std::vector<std::string> architecture_names() {
  std::lock_guard<std::mutex> lock(table_mutex());
  std::vector<std::string> v;
  for (const auto& [name, f] : table()) v.push_back(name);
  return v;
}

std::unique_ptr<Model> make_model(const core::ModelConfig& cfg, const ModelContext& ctx) {
  return make_architecture(cfg)->build(ctx);
}

}  // namespace mt::parallel
