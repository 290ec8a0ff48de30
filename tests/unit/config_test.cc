// Config: good input parses into typed fields; each bad input gives its specific message
// naming the key, the line and a hint; overrides apply; the resolved dump parses back equal;
// `~` in the path keys expands from $HOME.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>

#include "core/config.h"
#include "core/error.h"

using mt::core::Config;
using mt::core::Error;
using mt::core::parse_config;

namespace {

// Returns the message of the Error thrown by parsing `yaml` (with overrides), or "" if none.
std::string error_of(const std::string& yaml, const std::vector<std::string>& ov = {}) {
  try {
    parse_config(yaml, "test.yaml", ov);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Config, ParsesTypedValuesAndDefaults) {
  Config c = parse_config("model:\n  n_layer: 3\n  n_embd: 96\n  n_head: 3\ntrain:\n  steps: 7\n  seed: 42\n"
                          "optim:\n  lr: 0.01\nrun:\n  dir: /tmp/x\n", "t.yaml");
  EXPECT_EQ(c.model.n_layer, 3);
  EXPECT_EQ(c.model.n_embd, 96);
  EXPECT_EQ(c.train.steps, 7);
  EXPECT_EQ(c.train.seed, 42u);
  EXPECT_DOUBLE_EQ(c.optim.lr, 0.01);
  EXPECT_EQ(c.run.dir, "/tmp/x");
  EXPECT_EQ(c.model.vocab_size, mt::core::ModelConfig{}.vocab_size);  // default kept
  EXPECT_EQ(c.key_lines.at("train.steps"), 6);
}

struct BadCase {
  const char* name;
  std::string yaml;
  std::vector<std::string> overrides;
  std::vector<std::string> must_contain;
};

TEST(Config, BadInputsGiveSpecificMessages) {
  const std::vector<BadCase> cases = {
      {"unknown key", "model:\n  n_layers: 2\n", {}, {"unknown key 'model.n_layers'", "test.yaml:2", "did you mean 'model.n_layer'"}},
      {"typo in section", "modle:\n  n_layer: 2\n", {}, {"unknown section 'modle'", "did you mean 'model'"}},
      {"typo in key", "train:\n  setps: 5\n", {}, {"'train.setps'", "did you mean 'train.steps'"}},
      {"wrong type", "train:\n  steps: many\n", {}, {"'train.steps'", "expected an integer, got 'many'", "test.yaml:2"}},
      {"float for int", "model:\n  n_layer: 2.5\n", {}, {"'model.n_layer'", "expected an integer"}},
      {"negative size", "model:\n  n_embd: -64\n", {}, {"'model.n_embd'", "out of range", "test.yaml:2"}},
      {"zero heads", "model:\n  n_head: 0\n", {}, {"'model.n_head'", "out of range"}},
      {"not divisible", "model:\n  n_embd: 100\n  n_head: 3\n", {}, {"'model.n_embd'", "not divisible by n_head = 3", "test.yaml:2"}},
      {"bad choice", "optim:\n  name: adam\n", {}, {"'optim.name'", "invalid value 'adam'", "adamw, sgd"}},
      {"malformed yaml", "model:\n  n_layer: [1, 2\n", {}, {"malformed YAML", "test.yaml"}},
      {"section not a map", "model: 3\n", {}, {"'model'", "must be a mapping"}},
      {"list for scalar", "train:\n  steps: [1, 2]\n", {}, {"'train.steps'", "expected an integer, got a list"}},
      {"bad override key", "", {"train.step=5"}, {"unknown key 'train.step'", "did you mean 'train.steps'", "override"}},
      {"bad override value", "", {"train.steps=-1"}, {"'train.steps'", "out of range"}},
      {"override without =", "", {"train.steps"}, {"not of the form section.key=value"}},
      {"micro > batch", "train:\n  batch_size: 4\n  micro_batch: 8\n", {}, {"'train.micro_batch'", "larger than batch_size"}},
      {"packed without eod", "data:\n  source: hdf5\n  path: d\n  mode: packed\n", {},
       {"'data.eod_token'", "data.mode packed (test.yaml:4) needs data.eod_token"}},
      {"packed without eod (override)", "data:\n  source: hdf5\n  path: d\n", {"data.mode=packed"},
       {"'data.eod_token'", "data.mode packed"}},
      {"eod outside the vocabulary", "model:\n  vocab_size: 64\ndata:\n  source: hdf5\n  path: d\n  mode: packed\n  eod_token: 64\n",
       {}, {"'data.eod_token'", "eod_token = 64 is not below model.vocab_size = 64", "test.yaml:7"}},
      {"eod outside the vocabulary (documents)", "data:\n  source: hdf5\n  path: d\n  mode: documents\n", {"data.eod_token=100000"},
       {"'data.eod_token'", "not below model.vocab_size"}},
      {"eod below -1", "", {"data.eod_token=-2"}, {"'data.eod_token'", "out of range"}},
      {"packed needs hdf5", "data:\n  mode: packed\n  eod_token: 3\n", {}, {"'data.mode'", "data.mode packed needs a dataset with document boundaries"}},
  };
  // packed with an eod token (and documents with one) are fine
  EXPECT_EQ(error_of("data:\n  source: hdf5\n  path: d\n  mode: packed\n  eod_token: 63\nmodel:\n  vocab_size: 64\n"), "");
  EXPECT_EQ(error_of("data:\n  source: hdf5\n  path: d\n  mode: documents\n  eod_token: 0\n"), "");
  // documents mode sizes the global batch by data.batch_tokens: a micro_batch above the
  // (unused) batch_size is fine there
  EXPECT_EQ(error_of("train:\n  batch_size: 4\n  micro_batch: 8\ndata:\n  source: hdf5\n  path: d\n"
                     "  mode: documents\n", {}), "");
  for (const auto& c : cases) {
    const std::string msg = error_of(c.yaml, c.overrides);
    ASSERT_FALSE(msg.empty()) << c.name << ": no error";
    for (const auto& s : c.must_contain) EXPECT_NE(msg.find(s), std::string::npos) << c.name << ": '" << s << "' not in: " << msg;
  }
}

TEST(Config, MissingFileNamesThePath) {
  try {
    mt::core::load_config("/nonexistent/dir/cfg.yaml");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/cfg.yaml"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("cannot open"), std::string::npos);
    EXPECT_FALSE(e.context().hint.empty());
  }
}

TEST(Config, OverridesApplyAfterFile) {
  Config c = parse_config("train:\n  steps: 7\n", "t.yaml", {"train.steps=11", "run.dir=runs/abc", "optim.lr=2e-3"});
  EXPECT_EQ(c.train.steps, 11);
  EXPECT_EQ(c.run.dir, "runs/abc");
  EXPECT_DOUBLE_EQ(c.optim.lr, 2e-3);
  EXPECT_EQ(c.overrides.size(), 3u);
}

TEST(Config, ResolvedYamlRoundTrips) {
  Config a = parse_config("model:\n  n_layer: 5\noptim:\n  lr: 0.000123\n", "t.yaml", {"run.dir=some dir/x", "train.seed=99"});
  Config b = parse_config(mt::core::config_to_yaml(a), "resolved.yaml");
  EXPECT_EQ(mt::core::config_to_yaml(a).substr(mt::core::config_to_yaml(a).find("model:")),
            mt::core::config_to_yaml(b).substr(mt::core::config_to_yaml(b).find("model:")));
  EXPECT_EQ(b.model.n_layer, 5);
  EXPECT_DOUBLE_EQ(b.optim.lr, 0.000123);
  EXPECT_EQ(b.run.dir, "some dir/x");
  EXPECT_EQ(b.train.seed, 99u);
}

TEST(Config, SuggestKey) {
  EXPECT_EQ(mt::core::suggest_key("model.vocabsize"), "model.vocab_size");
  EXPECT_EQ(mt::core::suggest_key("train.sed"), "train.seed");
  EXPECT_EQ(mt::core::suggest_key("zzzzzzzzzzzzzzzzzzzz"), "");
}

// Hardening (issue #21): inputs that used to train something else than asked, silently.
TEST(Config, DuplicateKeysAreRefusedNamingBothLines) {
  const std::string msg = error_of("model:\n  n_layer: 2\n  n_head: 4\n  n_layer: 3\n");
  EXPECT_NE(msg.find("duplicate key 'model.n_layer': first on line 2, again on line 4"), std::string::npos) << msg;
  EXPECT_NE(msg.find("test.yaml:4"), std::string::npos) << msg;
  const std::string sec = error_of("train:\n  steps: 5\nmodel:\n  n_layer: 2\ntrain:\n  seed: 3\n");
  EXPECT_NE(sec.find("duplicate key 'train': first on line 1, again on line 5"), std::string::npos) << sec;
  EXPECT_EQ(error_of("model:\n  n_layer: 2\ntrain:\n  n_layer: 3\n").find("duplicate"), std::string::npos);
}

TEST(Config, IntegersPastTheirTypeSayOutOfRange) {
  for (const auto& [yaml, ov] : std::vector<std::pair<std::string, std::vector<std::string>>>{
           {"train:\n  eval_every: 99999999999\n", {}},
           {"", {"train.steps=99999999999999999999"}},
           {"", {"train.seed=-1"}}}) {
    const std::string msg = error_of(yaml, ov);
    EXPECT_NE(msg.find("out of range"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("expected an integer"), std::string::npos) << msg;
  }
  EXPECT_NE(error_of("train:\n  eval_every: 9x\n").find("expected an integer"), std::string::npos);
}

TEST(Config, DataPathAloneMeansHdf5AndContradictsMarkov) {
  EXPECT_EQ(parse_config("", "t", {"data.path=d"}).data.source, "hdf5");
  EXPECT_EQ(parse_config("data:\n  path: d\n", "t").data.source, "hdf5");
  // an override's path beats the file's source (eval's `data.path=DIR` on a checkpoint's config)
  EXPECT_EQ(parse_config("data:\n  source: markov\n", "t", {"data.path=d"}).data.source, "hdf5");
  EXPECT_EQ(parse_config("", "t").data.source, "markov");
  for (const auto& [yaml, ov] : std::vector<std::pair<std::string, std::vector<std::string>>>{
           {"data:\n  source: markov\n  path: d\n", {}},
           {"", {"data.source=markov", "data.path=d"}}}) {
    const std::string msg = error_of(yaml, ov);
    EXPECT_NE(msg.find("data.path = 'd' is set but data.source is markov"), std::string::npos) << msg;
  }
}

TEST(Config, ResumeNoneIsAFreshStart) {
  EXPECT_EQ(parse_config("", "t", {"resume=none"}).checkpoint.resume, "");
}

TEST(Config, DirectoryOrEmptyConfigFileIsAnError) {
  const std::string dir = ::testing::TempDir() + "cfg_dir_test";
  std::filesystem::create_directories(dir);
  for (const auto& [path, want] : std::vector<std::pair<std::string, std::string>>{
           {dir, "is a directory, not a config file"},
           {dir + "/empty.yaml", "the config file is empty"},
           {dir + "/comments.yaml", "the config file is empty"}}) {
    if (path != dir) std::ofstream(path) << (path.find("comments") != std::string::npos ? "# nothing\n\n" : "");
    try {
      mt::core::load_config(path, {"train.steps=1"});
      ADD_FAILURE() << path << ": no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
  std::ofstream(dir + "/defaults.yaml") << "train: {}\n";  // defaults on purpose
  EXPECT_EQ(mt::core::load_config(dir + "/defaults.yaml").train.steps, mt::core::TrainConfig{}.steps);
  std::filesystem::remove_all(dir);
}

TEST(Config, NearestWord) {
  EXPECT_EQ(mt::core::nearest_word("trian", {"train", "bench", "plan"}), "train");
  EXPECT_EQ(mt::core::nearest_word("xyzzyq", {"train", "bench", "plan"}), "");
}

// Sets $HOME for one test and restores it (unset if it was unset).
class ScopedHome {
 public:
  explicit ScopedHome(const char* value) {
    if (const char* h = std::getenv("HOME")) old_ = h;
    if (value) setenv("HOME", value, 1); else unsetenv("HOME");
  }
  ~ScopedHome() {
    if (old_) setenv("HOME", old_->c_str(), 1); else unsetenv("HOME");
  }

 private:
  std::optional<std::string> old_;
};

TEST(Config, TildeInPathKeysExpandsFromHome) {
  ScopedHome home("/home/tester");
  // from the file and from overrides (resume=PATH included); the value `~` alone too
  Config c = parse_config("run:\n  dir: ~/runs/a\ndata:\n  source: hdf5\n  path: ~/data/set\n", "t.yaml",
                          {"checkpoint.dir=~", "resume=~/ckpt/step_00000010"});
  EXPECT_EQ(c.run.dir, "/home/tester/runs/a");
  EXPECT_EQ(c.data.path, "/home/tester/data/set");
  EXPECT_EQ(c.checkpoint.dir, "/home/tester");
  EXPECT_EQ(c.checkpoint.resume, "/home/tester/ckpt/step_00000010");
  // the resolved config (written to <run.dir>/config.yaml) shows the expanded paths
  const std::string y = mt::core::config_to_yaml(c);
  EXPECT_NE(y.find("dir: /home/tester/runs/a\n"), std::string::npos) << y;
  EXPECT_NE(y.find("path: /home/tester/data/set\n"), std::string::npos) << y;
  EXPECT_EQ(y.find("~", y.find("model:")), std::string::npos) << y;  // (the "# override:" comments keep the input)
  // not a leading `~/`: kept as written; resume=auto is no path
  Config d = parse_config("", "t.yaml", {"run.dir=runs/~/x", "checkpoint.dir=~other/ck", "resume=auto"});
  EXPECT_EQ(d.run.dir, "runs/~/x");
  EXPECT_EQ(d.checkpoint.dir, "~other/ck");
  EXPECT_EQ(d.checkpoint.resume, "auto");
  // in YAML a lone ~ is null: quoted it is the home directory
  EXPECT_EQ(parse_config("run:\n  dir: \"~\"\n", "t.yaml").run.dir, "/home/tester");
  // a trailing slash in HOME gives no double slash
  ScopedHome slash("/home/tester/");
  EXPECT_EQ(parse_config("", "t.yaml", {"run.dir=~/r"}).run.dir, "/home/tester/r");
}

TEST(Config, TildeWithoutHomeIsAnErrorNamingTheKey) {
  ScopedHome home(nullptr);
  const std::string msg = error_of("run:\n  dir: ~/runs/a\n");
  EXPECT_NE(msg.find("run.dir = '~/runs/a' starts with ~ but $HOME is not set"), std::string::npos) << msg;
  EXPECT_NE(msg.find("test.yaml:2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("absolute path"), std::string::npos) << msg;
  EXPECT_EQ(error_of("run:\n  dir: /abs/runs\n"), "");  // no `~`: HOME is not needed
}

}  // namespace

TEST(Config, SequenceParallelNeedsTpAndSplittableRows) {
  // parallel.sp splits each micro-batch's tokens over the tp group
  const std::string tp1 = error_of("", {"parallel.sp=true"});
  EXPECT_NE(tp1.find("parallel.sp"), std::string::npos) << tp1;
  EXPECT_NE(tp1.find("parallel.tp"), std::string::npos) << tp1;
  const std::string odd = error_of("model:\n  seq_len: 33\n", {"parallel.sp=true", "parallel.tp=2"});
  EXPECT_NE(odd.find("model.seq_len = 33"), std::string::npos) << odd;
  const std::string docs = error_of("data:\n  source: hdf5\n  path: d\n  mode: documents\n",
                                    {"parallel.sp=true", "parallel.tp=2"});
  EXPECT_NE(docs.find("data.mode documents"), std::string::npos) << docs;
  const std::string cuda = error_of("", {"parallel.sp=true", "parallel.tp=2", "train.device=cuda"});
  EXPECT_NE(cuda.find("train.device = cuda"), std::string::npos) << cuda;
  EXPECT_EQ(error_of("model:\n  seq_len: 32\n", {"parallel.sp=true", "parallel.tp=2"}), "");
  EXPECT_EQ(error_of("model:\n  seq_len: 32\n", {"parallel.sp=true", "parallel.tp=4"}), "");
}

TEST(Config, PipelineKeysParseAndCheckEachOther) {
  const Config d = parse_config("", "t.yaml");
  EXPECT_EQ(d.parallel.pp, 1);
  EXPECT_EQ(d.parallel.pp_schedule, "1f1b");
  EXPECT_EQ(d.parallel.pp_virtual, 1);
  EXPECT_TRUE(d.parallel.pp_layers.empty());
  const Config c = parse_config("parallel:\n  pp: 2\n  pp_layers: [3, 1]\n", "t.yaml");
  EXPECT_EQ(c.parallel.pp_layers, (std::vector<int>{3, 1}));
  // overrides: a YAML list, a bare comma list, one value, and [] / '' for empty
  EXPECT_EQ(parse_config("", "t", {"parallel.pp=2", "parallel.pp_layers=[2,5]"}).parallel.pp_layers,
            (std::vector<int>{2, 5}));
  EXPECT_EQ(parse_config("", "t", {"parallel.pp=2", "parallel.pp_layers=4, 6"}).parallel.pp_layers,
            (std::vector<int>{4, 6}));
  EXPECT_EQ(parse_config("", "t", {"parallel.pp_layers=7"}).parallel.pp_layers, (std::vector<int>{7}));
  EXPECT_TRUE(parse_config("parallel:\n  pp_layers: [1]\n", "t", {"parallel.pp_layers=[]"}).parallel.pp_layers.empty());
  EXPECT_TRUE(parse_config("", "t", {"parallel.pp_layers="}).parallel.pp_layers.empty());
  // the resolved dump parses back to the same list
  const Config back = parse_config(mt::core::config_to_yaml(c), "r.yaml");
  EXPECT_EQ(back.parallel.pp_layers, c.parallel.pp_layers);
  // bad values name the key
  for (const auto& bad : {"parallel.pp_layers=[1,x]", "parallel.pp_layers=1,,2", "parallel.pp_layers=[0]",
                          "parallel.pp_layers=[[1]]", "parallel.pp_layers={a: 1}"}) {
    const std::string e = error_of("", {bad});
    EXPECT_NE(e.find("parallel.pp_layers"), std::string::npos) << bad << ": " << e;
  }
  EXPECT_NE(error_of("", {"parallel.pp_layers=[1,x]"}).find("a list of integers"), std::string::npos);
  EXPECT_NE(error_of("", {"parallel.pp_layers=[0]"}).find("out of range"), std::string::npos);
  EXPECT_NE(error_of("", {"parallel.pp=0"}).find("parallel.pp"), std::string::npos);
  EXPECT_NE(error_of("", {"parallel.pp_schedule=zb"}).find("gpipe, 1f1b, interleaved"), std::string::npos);
  // pp_layers has one entry per stage
  std::string e = error_of("", {"parallel.pp=3", "parallel.pp_layers=[1,1]"});
  EXPECT_NE(e.find("parallel.pp_layers has 2 entries but parallel.pp = 3"), std::string::npos) << e;
  // interleaved needs pp_virtual >= 2; pp_virtual > 1 needs interleaved (both keys named)
  e = error_of("", {"parallel.pp_schedule=interleaved"});
  EXPECT_NE(e.find("parallel.pp_schedule = interleaved needs parallel.pp_virtual >= 2"), std::string::npos) << e;
  e = error_of("", {"parallel.pp_virtual=2"});
  EXPECT_NE(e.find("parallel.pp_virtual = 2 needs parallel.pp_schedule = interleaved (it is 1f1b)"),
            std::string::npos) << e;
  EXPECT_EQ(error_of("", {"parallel.pp=2", "parallel.pp_schedule=interleaved", "parallel.pp_virtual=2"}), "");
}
