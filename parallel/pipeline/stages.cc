// What: split_layers and stage_layers (see stages.h).
#include "parallel/pipeline/stages.h"

#include "core/error.h"

namespace mt::parallel {

StageLayers stage_layers(const std::vector<std::pair<int, int>>& vstages, int pp, int stage) {
  MT_CHECK(pp >= 1 && stage >= 0 && stage < pp && !vstages.empty() && vstages.size() % static_cast<size_t>(pp) == 0,
           "stage {} of {} with {} virtual stages", stage, pp, vstages.size());
  StageLayers st;
  if (pp == 1 && vstages.size() == 1) return st;  // the whole model
  for (size_t v = static_cast<size_t>(stage); v < vstages.size(); v += static_cast<size_t>(pp))
    st.chunks.push_back(vstages[v]);
  st.embed = stage == 0;
  st.head = stage == pp - 1;
  return st;
}

}  // namespace mt::parallel
