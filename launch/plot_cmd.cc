// What: `meshtrain plot RUN [RUN...]`: loss (train, eval, the entropy floor), learning-rate
// and eval-accuracy charts (SVG, launch/svg.h) from each run's metrics.jsonl; several runs
// overlay, one colour per run (eval and top-5 dashed), named by their directories. --png
// converts each chart with rsvg-convert (librsvg2-bin) when it is installed.
// Why: comparing runs (lr, layouts, recipes) at a glance, without a plotting stack.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/log.h"
#include "io/metrics.h"
#include "launch/commands.h"
#include "launch/svg.h"

namespace mt::launch {

namespace fs = std::filesystem;
namespace log = core::log;

namespace {

// One run's curves from its metrics.jsonl.
struct RunCurves {
  std::string name;  // legend: the run directory's name
  XYSeries train, eval, floor, lr, acc, acc5;
  int steps = 0;
};

RunCurves read_run_curves(const std::string& run_dir) {
  RunCurves rc;
  std::istringstream in(io::read_file(run_dir + "/metrics.jsonl"));
  const std::string file = run_dir + "/metrics.jsonl";
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty()) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      if (in.peek() == EOF) {  // the last record, cut short by a crash: the run's own tail
        log::warn("{}:{}: skipping the last record, cut short (the run was killed mid-write?)", file, line_no);
        continue;
      }
      throw core::Error("not a JSON record").with_file(fmt::format("{}:{}", file, line_no)).with_library(e.what())
          .with_hint("each line of metrics.jsonl is one JSON object as train writes it; fix or delete this line");
    }
    try {
      const double step = j.value("step", 0.0);
      const auto add = [](XYSeries& s, double x, double y) { s.x.push_back(x), s.y.push_back(y); };
      // a non-finite loss (a diverged step) is written as null: a gap in the curve, not an error
      const auto num = [&j](const char* k) { return j[k].is_null() ? NAN : j[k].get<double>(); };
      if (j.contains("loss")) {
        add(rc.train, step + 1, num("loss"));  // after step s, s + 1 steps are done
        add(rc.lr, step + 1, j.value("lr", 0.0));
        ++rc.steps;
      }
      if (j.contains("eval_loss")) {
        add(rc.eval, step, num("eval_loss"));
        if (j.contains("data_entropy")) add(rc.floor, step, j["data_entropy"].get<double>());
        if (j.contains("eval_acc")) add(rc.acc, step, num("eval_acc"));
        if (j.contains("eval_acc_top5")) add(rc.acc5, step, num("eval_acc_top5"));
      }
    } catch (const nlohmann::json::exception& e) {  // a field of the wrong type ("loss": "x", a non-object)
      throw core::Error("bad record: step, loss, lr, eval_loss, eval_acc and data_entropy must be numbers")
          .with_file(fmt::format("{}:{}", file, line_no)).with_library(e.what())
          .with_hint("each line of metrics.jsonl is one JSON object as train writes it; fix or delete this line");
    }
  }
  if (rc.steps == 0) throw core::Error("no step records to plot").with_file(run_dir + "/metrics.jsonl");
  return rc;
}

}  // namespace

int cmd_plot(const PlotArgs& a) {
  MT_CHECK(!a.runs.empty(), "plot: no run directory");
  const std::string out = a.out.empty() ? a.runs.front() : a.out;
  std::vector<RunCurves> runs;
  for (const std::string& r : a.runs) {
    runs.push_back(read_run_curves(r));
    std::string name = fs::path(r).lexically_normal().filename().string();
    if (name.empty()) name = fs::path(r).lexically_normal().parent_path().filename().string();
    runs.back().name = name.empty() ? r : name;
  }
  for (size_t i = 0; i < runs.size(); ++i)  // the same directory name twice: the paths tell them apart
    for (size_t k = 0; k < runs.size(); ++k)
      if (k != i && runs[k].name == runs[i].name) runs[i].name = a.runs[i];
  const bool one = runs.size() == 1;
  // one run: a colour per curve; several: a colour per run, eval / top-5 dashed
  std::vector<XYSeries> loss, lr, acc;
  int floor_color = -1;
  for (size_t i = 0; i < runs.size(); ++i) {
    RunCurves& rc = runs[i];
    const std::string pre = one ? "" : rc.name + " ";
    const int col = one ? -1 : static_cast<int>(i);
    const auto put = [&](std::vector<XYSeries>& v, XYSeries s, const std::string& name, bool dashed, int one_color) {
      if (s.x.empty()) return;
      s.name = pre + name;
      s.color = one ? one_color : col;
      s.dashed = !one && dashed;
      v.push_back(std::move(s));
    };
    put(loss, rc.train, "train loss", false, 0);
    put(loss, rc.eval, "eval loss", true, 1);
    put(lr, rc.lr, "lr", false, 0);
    put(acc, rc.acc, "eval acc (top-1)", false, 0);
    put(acc, rc.acc5, "eval acc (top-5)", true, 1);
    if (floor_color < 0 && !rc.floor.x.empty()) {  // the floor once: runs of one language share it
      rc.floor.name = "entropy floor";
      rc.floor.color = floor_color = one ? 2 : static_cast<int>(runs.size());
      rc.floor.dashed = true;
      loss.push_back(rc.floor);
    }
  }
  const std::string what = one ? a.runs.front() : fmt::format("{} runs", runs.size());
  io::ensure_directory(out);
  std::vector<std::string> files = {out + "/loss.svg", out + "/lr.svg"};
  io::write_file_atomic(files[0], svg_xy_chart("loss: " + what, "steps", "loss (nats/token)", loss));
  io::write_file_atomic(files[1], svg_xy_chart("learning rate: " + what, "steps", "lr", lr));
  if (!acc.empty()) {
    files.push_back(out + "/accuracy.svg");
    io::write_file_atomic(files.back(), svg_xy_chart("next-token accuracy: " + what, "steps", "accuracy", acc));
  }
  std::printf("wrote %s (%s)\n", fmt::format("{}", fmt::join(files, ", ")).c_str(),
              one ? fmt::format("{} steps", runs[0].steps).c_str() : what.c_str());
  if (a.png) {
    for (const std::string& svg : files) svg_to_png(svg);
    std::printf("wrote the PNG beside each SVG\n");
  }
  return 0;
}

void svg_to_png(const std::string& svg) {
  const std::string png = svg.substr(0, svg.size() - 4) + ".png";
  if (std::system("command -v rsvg-convert >/dev/null 2>&1") != 0) {
    throw core::Error("--png needs rsvg-convert, which is not installed (the SVGs are written)")
        .with_hint("install it (Debian: apt-get install librsvg2-bin) or open the .svg files in a browser");
  }
  const std::string cmd = fmt::format("rsvg-convert -f png -o '{}' '{}'", png, svg);
  if (svg.find('\'') != std::string::npos || std::system(cmd.c_str()) != 0)
    throw core::Error("rsvg-convert failed to convert the chart").with_file(svg);
}

}  // namespace mt::launch
