// train.micro_batch: auto (core::auto_micro_batch): it parses, dumps and reads back; the rule
// picks the largest micro-batch that divides the per-replica batch, with a pipeline the largest
// that leaves >= pp micro-batches (interleaved: a multiple of pp) and what it picks passes the
// trainer's pipeline check; a batch dp does not divide is an error naming train.batch_size.
#include <gtest/gtest.h>

#include <string>

#include "core/config.h"
#include "core/error.h"
#include "parallel/pipeline/schedule.h"

using mt::core::auto_micro_batch;
using mt::core::Config;
using mt::core::Error;
using mt::core::kAutoMicroBatch;
using mt::core::parse_config;

namespace {

Config batch(int batch_size, const std::string& extra = "") {
  return parse_config("train:\n  batch_size: " + std::to_string(batch_size) + "\n  micro_batch: auto\n" + extra, "t.yaml");
}

TEST(MicroBatchAuto, ParsesDumpsAndReadsBack) {
  Config c = batch(16);
  EXPECT_EQ(c.train.micro_batch, kAutoMicroBatch);
  EXPECT_NE(mt::core::config_to_yaml(c).find("  micro_batch: auto\n"), std::string::npos);
  // an override sets it too, and a number overrides auto
  EXPECT_EQ(parse_config("{}", "t.yaml", {"train.micro_batch=auto"}).train.micro_batch, kAutoMicroBatch);
  EXPECT_EQ(parse_config("train:\n  micro_batch: auto\n", "t.yaml", {"train.micro_batch=4"}).train.micro_batch, 4);
  // resolved: the number, marked as auto's, and the dump parses back to the number
  mt::core::resolve_micro_batch(c, 2);
  EXPECT_EQ(c.train.micro_batch, 8);
  EXPECT_TRUE(c.train.micro_batch_auto);
  const std::string dumped = mt::core::config_to_yaml(c);
  EXPECT_NE(dumped.find("  micro_batch: 8  # auto\n"), std::string::npos) << dumped;
  EXPECT_EQ(parse_config(dumped, "config.yaml").train.micro_batch, 8);
}

TEST(MicroBatchAuto, BadValuesStillFail) {
  for (const char* v : {"autox", "0", "-1", "2.5"}) {
    try {
      parse_config(std::string("train:\n  micro_batch: ") + v + "\n", "t.yaml");
      ADD_FAILURE() << v << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("train.micro_batch"), std::string::npos) << e.what();
    }
  }
  try {
    parse_config("train:\n  micro_batch: autox\n", "t.yaml");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("an integer or auto"), std::string::npos) << e.what();
  }
}

TEST(MicroBatchAuto, LargestDivisorOfThePerReplicaBatch) {
  EXPECT_EQ(auto_micro_batch(batch(16), 1, 1), 16);
  EXPECT_EQ(auto_micro_batch(batch(16), 2, 1), 8);
  EXPECT_EQ(auto_micro_batch(batch(16), 4, 1), 4);
  EXPECT_EQ(auto_micro_batch(batch(16), 16, 1), 1);
  EXPECT_EQ(auto_micro_batch(batch(12), 3, 1), 4);
  // resolve_micro_batch: dp from parallel.dp, else world / (tp x pp); a number is left alone
  Config c = batch(16, "parallel:\n  tp: 2\n");
  mt::core::resolve_micro_batch(c, 4);
  EXPECT_EQ(c.train.micro_batch, 8);  // dp 2
  Config d = batch(16, "parallel:\n  dp: 4\n");
  mt::core::resolve_micro_batch(d, 4);
  EXPECT_EQ(d.train.micro_batch, 4);
  Config e = parse_config("train:\n  batch_size: 16\n  micro_batch: 2\n", "t.yaml");
  mt::core::resolve_micro_batch(e, 2);
  EXPECT_EQ(e.train.micro_batch, 2);
  EXPECT_FALSE(e.train.micro_batch_auto);
}

TEST(MicroBatchAuto, UnevenBatchIsAnErrorUnlessTheSplitMayBeUneven) {
  try {
    auto_micro_batch(batch(12), 8, 1);
    ADD_FAILURE() << "batch 12 over dp 8 was accepted";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("train.batch_size"), std::string::npos) << m;
    EXPECT_NE(m.find("dp = 8"), std::string::npos) << m;
    EXPECT_NE(m.find("16"), std::string::npos) << m;  // the hint's next multiple of dp
  }
  // data.schedule: dynamic splits unevenly: the floor share, at least 1
  EXPECT_EQ(auto_micro_batch(batch(12, "data:\n  schedule: dynamic\n"), 8, 1), 1);
  EXPECT_EQ(auto_micro_batch(batch(12, "data:\n  schedule: dynamic\n"), 5, 1), 2);
}

TEST(MicroBatchAuto, DocumentsModeUsesBatchTokens) {
  const std::string docs = "data:\n  source: hdf5\n  path: /x\n  mode: documents\n  batch_tokens: 2048\nmodel:\n  seq_len: 64\n";
  EXPECT_EQ(auto_micro_batch(batch(4, docs), 2, 1), 16);  // 2048 / 64 / 2
}

TEST(MicroBatchAuto, PipelineKeepsAtLeastPpMicroBatches) {
  EXPECT_EQ(auto_micro_batch(batch(16, "parallel:\n  pp: 2\n"), 1, 2), 8);   // 2 micro-batches of 8
  EXPECT_EQ(auto_micro_batch(batch(16, "parallel:\n  pp: 4\n"), 2, 4), 2);   // 8 per replica: 4 of 2
  EXPECT_EQ(auto_micro_batch(batch(16, "parallel:\n  pp: 3\n"), 1, 3), 4);   // 4 >= 3 (16 has no 3 | n)
  EXPECT_EQ(auto_micro_batch(batch(12, "parallel:\n  pp: 4\n  pp_schedule: interleaved\n  pp_virtual: 2\n"), 1, 4), 3);
  // no micro-batch gives a multiple of 3 out of 16: 1 (the pipeline check then names the keys)
  EXPECT_EQ(auto_micro_batch(batch(16, "parallel:\n  pp: 3\n  pp_schedule: interleaved\n  pp_virtual: 2\n"), 1, 3), 1);
  EXPECT_EQ(auto_micro_batch(batch(2, "parallel:\n  pp: 4\n"), 1, 4), 1);  // fewer rows than stages
}

// Over many shapes: where some micro-batch passes the trainer's pipeline check, auto's does,
// and none larger does.
TEST(MicroBatchAuto, PickIsTheLargestThatPassesThePipelineCheck) {
  using mt::parallel::PipeSchedule;
  for (const char* sched : {"gpipe", "1f1b", "interleaved"})
    for (int pp = 2; pp <= 4; ++pp)
      for (int dp = 1; dp <= 4; ++dp)
        for (int b = dp; b <= 48; b += dp) {
          const bool inter = std::string(sched) == "interleaved";
          const std::string extra = "parallel:\n  pp: " + std::to_string(pp) + "\n  pp_schedule: " + sched +
                                    (inter ? "\n  pp_virtual: 2\n" : "\n");
          const int v = inter ? 2 : 1;
          const PipeSchedule s = mt::parallel::parse_pipe_schedule(sched);
          const int per = b / dp, got = auto_micro_batch(batch(b, extra), dp, pp);
          ASSERT_EQ(per % got, 0) << sched << " pp " << pp << " dp " << dp << " batch " << b;
          auto passes = [&](int m) {
            try {
              mt::parallel::check_pipeline(s, pp, v, per / m);
              return per / m >= pp;  // auto also fills gpipe's pipeline where it can
            } catch (const Error&) {
              return false;
            }
          };
          int best = 0;
          for (int m = 1; m <= per; ++m)
            if (per % m == 0 && passes(m)) best = m;
          EXPECT_EQ(got, best > 0 ? best : 1) << sched << " pp " << pp << " dp " << dp << " batch " << b;
        }
}

}  // namespace
