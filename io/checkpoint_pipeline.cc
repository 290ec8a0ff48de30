// What: CheckpointPipeline (see checkpoint_pipeline.h).
#include "io/checkpoint_pipeline.h"

#include <fmt/format.h>

#include "core/error.h"
#include "parallel/pipeline/stages.h"

namespace mt::io {

CheckpointPipeline CheckpointPipeline::none(int n_layer) {
  CheckpointPipeline p;
  p.vstages = {{0, n_layer}};
  return p;
}

CheckpointPipeline CheckpointPipeline::from_manifest(const nlohmann::json& m, int n_layer, const std::string& file) {
  if (n_layer < 0 && m.contains("model") && m.at("model").contains("n_layer"))
    n_layer = m.at("model").at("n_layer").get<int>();
  if (!m.contains("pipeline")) return n_layer < 0 ? CheckpointPipeline{} : none(n_layer);
  CheckpointPipeline p;
  auto bad = [&](const std::string& why) {
    return core::Error("the manifest's \"pipeline\" " + why).with_file(file)
        .with_hint("the checkpoint was written by another model or meshtrain version");
  };
  try {
    const auto& j = m.at("pipeline");
    p.pp = j.at("pp").get<int>();
    p.virtual_stages = j.value("virtual", 1);
    p.schedule = j.value("schedule", std::string());
    for (const auto& v : j.at("vstages")) p.vstages.emplace_back(v.at(0).get<int>(), v.at(1).get<int>());
  } catch (const nlohmann::json::exception& e) {
    throw bad("is malformed").with_library(e.what());
  }
  if (p.pp < 1 || p.virtual_stages < 1 || p.vstages.size() != static_cast<size_t>(p.pp) * p.virtual_stages)
    throw bad(fmt::format("has pp {} x virtual {} but {} virtual stages", p.pp, p.virtual_stages,
                          p.vstages.size()));
  int at = 0;
  for (const auto& [b, e] : p.vstages) {
    if (b != at || e <= b)
      throw bad(fmt::format("virtual stages do not tile the layers ([{}, {}) after layer {})", b, e, at));
    at = e;
  }
  if (n_layer >= 0 && at != n_layer) throw bad(fmt::format("virtual stages cover {} layers, model.n_layer is {}", at, n_layer));
  return p;
}

nlohmann::json CheckpointPipeline::to_json() const {
  nlohmann::json vs = nlohmann::json::array();
  for (const auto& [b, e] : vstages) vs.push_back({b, e});
  return {{"pp", pp}, {"virtual", virtual_stages}, {"schedule", schedule}, {"vstages", vs}};
}

parallel::StageLayers CheckpointPipeline::stage(int s) const {
  if (pp == 1 && vstages.size() <= 1) return {};  // the whole model
  return parallel::stage_layers(vstages, pp, s);
}

int CheckpointPipeline::holder(const parallel::ParamSpec& spec, int n_layer) const {
  for (int s = 0; s < pp; ++s)
    if (stage(s).holds(spec, n_layer)) return s;
  MT_FAIL("no pipeline stage of {} holds parameter {}", describe(), spec.name);
}

std::string CheckpointPipeline::describe() const {
  std::string s = fmt::format("pp {}", pp);
  if (virtual_stages > 1) s += fmt::format(" x {} virtual", virtual_stages);
  if (pp > 1 || virtual_stages > 1) {
    s += " (layers";
    for (size_t v = 0; v < vstages.size(); ++v) {
      const auto [b, e] = vstages[v];
      s += (v ? " | " : " ") + (e - b == 1 ? std::to_string(b) : fmt::format("{}-{}", b, e - 1));
    }
    s += ")";
  }
  return s;
}

bool same_stage(const parallel::StageLayers& a, const parallel::StageLayers& b, int n_layer) {
  const auto chunks = [&](const parallel::StageLayers& s) {
    return s.chunks.empty() ? std::vector<std::pair<int, int>>{{0, n_layer}} : s.chunks;
  };
  return a.embed == b.embed && a.head == b.head && chunks(a) == chunks(b);
}

}  // namespace mt::io
