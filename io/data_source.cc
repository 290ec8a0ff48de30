// What: the data-source factory, the one place that knows the list of sources.
#include "io/data_source.h"

#include "core/error.h"
#include "io/dataset.h"
#include "io/markov_source.h"

namespace mt::io {

std::unique_ptr<DataSource> make_data_source(const core::Config& cfg, int verify_first, int verify_stride) {
  if (cfg.data.source == "markov") {
    const int vocab = cfg.data.markov_vocab > 0 ? cfg.data.markov_vocab : cfg.model.vocab_size;
    return std::make_unique<MarkovSource>(vocab, cfg.data.markov_order,
                                          cfg.data.markov_sharpness, cfg.data.seed);
  }
  if (cfg.data.source == "hdf5") {
    return std::make_unique<Hdf5Source>(cfg.data.path, cfg.model.vocab_size, cfg.model.seq_len,
                                        parse_sample_mode(cfg.data.mode), cfg.data.verify, verify_first,
                                        verify_stride, cfg.data.eod_token);
  }
  throw core::Error(fmt::format("unknown data source '{}'", cfg.data.source)).with_yaml("data.source");
}

}  // namespace mt::io
