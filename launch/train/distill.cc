// What: Teacher (see distill.h).
#include "launch/train/distill.h"

#include <fmt/format.h>

#include "core/error.h"
#include "core/memory.h"
#include "parallel/models/registry.h"

namespace mt::launch {

namespace {

// The teacher's file for errors: its manifest, or the HF directory's config.json.
std::string teacher_file(const ModelSource& src) {
  return src.hf ? src.path + "/config.json" : src.path + "/manifest.json";
}

core::Error teacher_error(const core::Config& cfg, const ModelSource& src, const std::string& msg,
                          const std::string& hint) {
  auto it = cfg.key_lines.find("train.distill.teacher");
  const std::string where = it != cfg.key_lines.end() && !cfg.source_file.empty()
                                ? fmt::format(" (set in {}:{})", cfg.source_file, it->second)
                                : " (set on the command line)";
  core::Error e(fmt::format("train.distill.teacher = {}{}: {}", cfg.train.distill.teacher, where, msg));
  e.with_file(teacher_file(src));
  e.with_yaml("train.distill.teacher", it != cfg.key_lines.end() ? it->second : -1);
  e.with_hint(hint);
  return e;
}

}  // namespace

Teacher::Teacher(const core::Config& cfg, const parallel::Model& student, parallel::Communicator& world,
                 kernels::Ops& ops, parallel::Communicator* tp_comm)
    : alpha_(static_cast<float>(cfg.train.distill.alpha)),
      temperature_(static_cast<float>(cfg.train.distill.temperature)) {
  try {
    src_ = resolve_model_source(cfg.train.distill.teacher, {}, world);
  } catch (core::Error& e) {
    e.with_yaml("train.distill.teacher");
    throw;
  }
  const core::ModelConfig& tm = src_.cfg.model;
  const core::ModelConfig& sm = cfg.model;
  if (tm.vocab_size != sm.vocab_size) {
    throw teacher_error(cfg, src_,
                        fmt::format("the teacher's vocabulary has {} tokens, the student's (model.vocab_size) {}",
                                    tm.vocab_size, sm.vocab_size),
                        "distillation compares the two distributions token by token: use a teacher trained with the "
                        "same tokenizer and model.vocab_size");
  }
  if (tm.seq_len < sm.seq_len) {
    throw teacher_error(cfg, src_,
                        fmt::format("the teacher's context is {} positions, shorter than the student's model.seq_len "
                                    "= {}", tm.seq_len, sm.seq_len),
                        "use a teacher with at least the student's context, or a smaller model.seq_len");
  }
  const int tp = student.tp().size();
  arch_ = parallel::make_architecture(tm);
  if (const std::string bad = arch_->tp_violation(tp); !bad.empty()) {
    throw teacher_error(cfg, src_, "the teacher cannot be split over the run's tensor-parallel group: " + bad,
                        "the teacher runs at the student's parallel.tp; choose a tp both allow (teacher: " +
                            arch_->tp_constraint() + ")");
  }
  parallel::ModelContext ctx;
  ctx.tp = tp;
  ctx.tp_rank = student.tp().rank();
  ctx.tp_comm = tp > 1 ? tp_comm : nullptr;
  ctx.ops = &ops;
  {
    core::MemoryScope scope(core::MemCat::Params);
    model_ = arch_->build(ctx);
  }
  load_source_weights(src_, *model_);
  if (model_->head_vocab_rows() != student.head_vocab_rows()) {
    throw teacher_error(cfg, src_,
                        fmt::format("the teacher's vocabulary slice per tp rank ({} rows) differs from the student's "
                                    "({})", model_->head_vocab_rows(), student.head_vocab_rows()),
                        "use a teacher architecture that pads its vocabulary like the student's");
  }
}

Teacher::~Teacher() = default;

parallel::DistillTarget Teacher::forward(const int32_t* inputs, int B, int T, const int32_t* doc_ids) {
  model_->forward(inputs, nullptr, B, T, doc_ids);
  parallel::DistillTarget d;
  d.teacher_logits = model_->head_logits_any();
  MT_CHECK(d.teacher_logits != nullptr, "the teacher ({}) exposes no logits", arch_->name());
  d.alpha = alpha_;
  d.temperature = temperature_;
  return d;
}

std::string Teacher::describe() const {
  return fmt::format("{} ({}), alpha {}, temperature {}", src_.source, arch_->describe(model_->tp().size()), alpha_,
                     temperature_);
}

}  // namespace mt::launch
