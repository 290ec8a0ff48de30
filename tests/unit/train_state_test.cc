// What: TrainState's manifest JSON (launch/train/train_state.h): the exact "trainer" object a
// checkpoint carries, its round trip, and the defaults for keys that older checkpoints lack.
#include <cmath>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "launch/train/train_state.h"

using mt::launch::TrainState;

TEST(TrainState, ToJsonIsTheManifestTrainerObject) {
  TrainState s;
  s.best_eval = 2.5;
  s.evals_without_gain = 2;
  s.last_loss = 2.75;
  s.eval_due = true;
  s.skipped_steps = 3;
  s.skipped_in_row = 1;
  s.totals = {100.0, 2048.0, 7.0, 2};
  const nlohmann::json j = s.to_json(/*process_wall_s=*/1.5);
  EXPECT_EQ(j.dump(), R"({"best_eval":2.5,"eval_due":true,"evals_without_gain":2,"last_loss":2.75,)"
                      R"("skipped_in_row":1,"skipped_steps":3,)"
                      R"("totals":{"starts":3,"tokens":2048.0,"train_ms":100.0,"wall_s":8.5}})");
}

TEST(TrainState, RoundTrip) {
  TrainState s;
  s.best_eval = 1.25;
  s.evals_without_gain = 1;
  s.last_loss = 3.5;
  s.skipped_steps = 4;
  s.skipped_in_row = 2;
  s.totals = {10.0, 20.0, 30.0, 1};
  const TrainState r = TrainState::from_json(s.to_json(5.0));
  EXPECT_EQ(r.best_eval, 1.25);
  EXPECT_EQ(r.evals_without_gain, 1);
  EXPECT_EQ(r.last_loss, 3.5);
  EXPECT_FALSE(r.eval_due);
  EXPECT_EQ(r.skipped_steps, 4);
  EXPECT_EQ(r.skipped_in_row, 2);
  // the checkpoint counts this process: its wall time and one more start
  EXPECT_EQ(r.totals.train_ms, 10.0);
  EXPECT_EQ(r.totals.tokens, 20.0);
  EXPECT_EQ(r.totals.wall_s, 35.0);
  EXPECT_EQ(r.totals.starts, 2);
}

TEST(TrainState, NanLastLossIsWrittenAsNullAndReadBack) {
  TrainState s;  // no step done: last_loss NaN
  const nlohmann::json j = nlohmann::json::parse(s.to_json(0.0).dump());  // as the manifest file holds it
  EXPECT_TRUE(j.at("last_loss").is_null());
  EXPECT_TRUE(std::isnan(TrainState::from_json(j).last_loss));
}

TEST(TrainState, OlderCheckpointsGetTheDefaults) {
  const TrainState r = TrainState::from_json(nlohmann::json::parse(R"({"best_eval":2.0,"evals_without_gain":3})"));
  EXPECT_EQ(r.best_eval, 2.0);
  EXPECT_EQ(r.evals_without_gain, 3);
  EXPECT_TRUE(std::isnan(r.last_loss));
  EXPECT_FALSE(r.eval_due);
  EXPECT_EQ(r.skipped_steps, 0);
  EXPECT_EQ(r.skipped_in_row, 0);
  EXPECT_EQ(r.totals.train_ms, 0.0);
  EXPECT_EQ(r.totals.tokens, 0.0);
  EXPECT_EQ(r.totals.wall_s, 0.0);
  EXPECT_EQ(r.totals.starts, 0);
}

TEST(TrainState, BestEvalAndPatienceAreRequired) {
  EXPECT_ANY_THROW(TrainState::from_json(nlohmann::json::parse(R"({"evals_without_gain":3})")));
  EXPECT_ANY_THROW(TrainState::from_json(nlohmann::json::parse(R"({"best_eval":2.0})")));
}

TEST(TrainState, PatienceExhausted) {
  TrainState s;
  s.evals_without_gain = 2;
  EXPECT_FALSE(s.patience_exhausted(0));  // early stopping off
  EXPECT_TRUE(s.patience_exhausted(2));
  EXPECT_FALSE(s.patience_exhausted(3));
}
