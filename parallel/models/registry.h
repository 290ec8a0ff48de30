// What: the model registry: model.arch -> Architecture. registry.cc is the ONE file that
// knows the list of built-in architectures (one line each); tests and plug-ins may add
// their own at run time (register_architecture), e.g. a test-only model that proves the
// trainer, gradient sync, optimizer and checkpoints do not know GPT-2.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "parallel/models/model.h"

namespace mt::parallel {

// model.arch's default, and the architecture of checkpoints written before model.arch existed.
inline constexpr const char* kDefaultArch = "gpt2";

using ArchitectureFactory = std::function<std::shared_ptr<const Architecture>(const core::ModelConfig&)>;

// The architecture cfg.arch names, built from cfg. An unknown name is an Error naming
// model.arch and listing the known ones.
std::shared_ptr<const Architecture> make_architecture(const core::ModelConfig& cfg);
// Adds (or replaces) an architecture under `name`.
void register_architecture(const std::string& name, ArchitectureFactory factory);
// Every registered name, sorted.
std::vector<std::string> architecture_names();

// Convenience: make_architecture(cfg)->build(ctx) (the model keeps its architecture alive).
std::unique_ptr<Model> make_model(const core::ModelConfig& cfg, const ModelContext& ctx = {});

}  // namespace mt::parallel
