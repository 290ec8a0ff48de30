// What: a sweep's outputs (see sweep.h): sweep.csv (one row per trial: its swept values,
// status, the step it reached, its last and best eval loss, tokens/s, its eval loss at each
// rung), one SVG per swept key (every trial's last eval loss against the key's value: a log
// axis for log-scaled keys, categories for non-numeric values; finished and stopped trials
// in their own colours) and report.md (the best trial with its command line, the trials,
// the halving decisions).
// Why: the answer of a sweep is "which values, and how sure": the table, the plots and the
// exact command to rerun the winner, from the same state the runner keeps.
#include <algorithm>
#include <cmath>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/log.h"
#include "io/metrics.h"
#include "launch/sweep/sweep.h"

namespace mt::launch::sweep {

namespace {

// The trial's last eval loss: at train.steps when finished, else at the rung it reached.
std::optional<double> last_loss(const TrialRecord& r) {
  if (r.final_eval_loss) return r.final_eval_loss;
  const auto it = r.rung_loss.find(r.reached);
  if (it != r.rung_loss.end()) return it->second;
  return std::nullopt;
}

std::string cell(const std::optional<double>& v) {
  return v && std::isfinite(*v) ? fmt::format("{:.6f}", *v) : std::string();
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

std::string xml_escape(const std::string& s) {
  std::string o;
  for (char c : s) o += c == '<' ? "&lt;" : c == '>' ? "&gt;" : c == '&' ? "&amp;" : c == '\'' ? "&apos;" : std::string(1, c);
  return o;
}

bool numeric(const std::string& v, double* x) {
  try {
    size_t n = 0;
    *x = std::stod(v, &n);
    return n == v.size() && std::isfinite(*x);
  } catch (const std::exception&) {
    return false;
  }
}

// Eval loss against one swept key: a point per trial with a loss, labelled with its id.
std::string scatter(const Param& p, const State& st, size_t k) {
  const double W = 640, H = 380, L = 70, R = 170, T = 40, B = 60, pw = W - L - R, ph = H - T - B;
  struct Pt {
    std::string value;
    double x = 0, y = 0;
    int id = 0;
    bool finished = false;
  };
  std::vector<Pt> pts;
  bool all_numeric = true;
  std::vector<std::string> cats;  // non-numeric values, in first-seen order
  for (const auto& r : st.trials) {
    const auto y = last_loss(r);
    if (!y || !std::isfinite(*y)) continue;
    Pt pt;
    pt.value = r.trial.params[k].second;
    pt.y = *y;
    pt.id = r.trial.id;
    pt.finished = r.status == Status::Finished;
    all_numeric &= numeric(pt.value, &pt.x);
    if (std::find(cats.begin(), cats.end(), pt.value) == cats.end()) cats.push_back(pt.value);
    pts.push_back(pt);
  }
  const bool log_x = all_numeric && p.log_scale();
  auto tx = [&](double x) { return log_x ? std::log10(x) : x; };
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  for (auto& pt : pts) {
    if (!all_numeric) pt.x = static_cast<double>(std::find(cats.begin(), cats.end(), pt.value) - cats.begin());
    xmin = std::min(xmin, tx(pt.x)), xmax = std::max(xmax, tx(pt.x));
    ymin = std::min(ymin, pt.y), ymax = std::max(ymax, pt.y);
  }
  if (pts.empty()) xmin = 0, xmax = 1, ymin = 0, ymax = 1;
  if (!(xmax > xmin)) xmin -= 0.5, xmax += 0.5;
  if (!(ymax > ymin)) ymin -= 0.5, ymax += 0.5;
  const double xpad = 0.08 * (xmax - xmin), ypad = 0.08 * (ymax - ymin);
  xmin -= xpad, xmax += xpad, ymin -= ypad, ymax += ypad;
  auto X = [&](double v) { return L + (tx(v) - xmin) / (xmax - xmin) * pw; };
  auto Xc = [&](double t) { return L + (t - xmin) / (xmax - xmin) * pw; };  // t already on the axis scale
  auto Y = [&](double v) { return T + ph - (v - ymin) / (ymax - ymin) * ph; };
  std::ostringstream o;
  o << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H
    << "' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n"
    << "<text x='" << W / 2 << "' y='20' text-anchor='middle' font-size='14'>eval loss vs " << xml_escape(p.key)
    << "</text>\n<line x1='" << L << "' y1='" << T + ph << "' x2='" << L + pw << "' y2='" << T + ph
    << "' stroke='black'/>\n<line x1='" << L << "' y1='" << T << "' x2='" << L << "' y2='" << T + ph
    << "' stroke='black'/>\n<text x='15' y='" << T + ph / 2 << "' transform='rotate(-90 15 " << T + ph / 2
    << ")' text-anchor='middle'>eval loss</text>\n<text x='" << L + pw / 2 << "' y='" << H - 15
    << "' text-anchor='middle'>" << xml_escape(p.key) << (log_x ? " (log scale)" : "") << "</text>\n";
  for (int i = 0; i <= 4; ++i) {  // y grid
    const double v = ymin + (ymax - ymin) * i / 4;
    o << "<text x='" << L - 5 << "' y='" << Y(v) + 4 << "' text-anchor='end'>" << fmt::format("{:.4g}", v)
      << "</text>\n<line x1='" << L << "' y1='" << Y(v) << "' x2='" << L + pw << "' y2='" << Y(v)
      << "' stroke='#ddd'/>\n";
  }
  if (all_numeric && cats.size() <= 8) {  // x ticks at the values swept, as written
    for (const auto& c : cats) {
      double x = 0;
      numeric(c, &x);
      o << "<text x='" << X(x) << "' y='" << T + ph + 18 << "' text-anchor='middle'>" << xml_escape(c) << "</text>\n";
    }
  } else if (all_numeric) {  // 5 along the axis (values, also on a log axis)
    for (int i = 0; i <= 4; ++i) {
      const double t = xmin + (xmax - xmin) * i / 4;
      o << "<text x='" << Xc(t) << "' y='" << T + ph + 18 << "' text-anchor='middle'>"
        << fmt::format("{:.3g}", log_x ? std::pow(10.0, t) : t) << "</text>\n";
    }
  } else {
    for (size_t c = 0; c < cats.size(); ++c)
      o << "<text x='" << Xc(static_cast<double>(c)) << "' y='" << T + ph + 18 << "' text-anchor='middle'>"
        << xml_escape(cats[c]) << "</text>\n";
  }
  for (const auto& pt : pts) {
    const double cx = all_numeric ? X(pt.x) : Xc(pt.x), cy = Y(pt.y);
    o << "<circle cx='" << cx << "' cy='" << cy << "' r='5' fill='" << (pt.finished ? "#1f77b4" : "#ff7f0e")
      << "'/>\n<text x='" << cx + 7 << "' y='" << cy - 5 << "' font-size='10'>" << pt.id << "</text>\n";
  }
  o << "<circle cx='" << W - R + 16 << "' cy='" << T + 6 << "' r='5' fill='#1f77b4'/><text x='" << W - R + 28
    << "' y='" << T + 10 << "'>finished (step " << st.steps << ")</text>\n";
  if (!st.rungs.empty())
    o << "<circle cx='" << W - R + 16 << "' cy='" << T + 24 << "' r='5' fill='#ff7f0e'/><text x='" << W - R + 28
      << "' y='" << T + 28 << "'>stopped at a rung</text>\n";
  o << "</svg>\n";
  return o.str();
}

std::string svg_name(const std::string& key) { return "eval_loss_vs_" + key + ".svg"; }

}  // namespace

void write_report(const Spec& spec, const State& st) {
  const std::string& d = spec.dir;
  // sweep.csv
  std::string csv = "trial";
  for (const auto& p : spec.params) csv += "," + csv_field(p.key);
  csv += ",status,steps,final_eval_loss,best_eval_loss,tokens_per_s";
  for (int64_t r : st.rungs) csv += fmt::format(",eval_loss_at_{}", r);
  csv += ",dir\n";
  for (const auto& r : st.trials) {
    csv += r.trial.name();
    for (const auto& [k, v] : r.trial.params) csv += "," + csv_field(v);
    csv += fmt::format(",{},{},{},{},{:.1f}", status_name(r.status), r.reached, cell(last_loss(r)),
                       cell(r.best_eval_loss), r.tokens_per_s);
    for (int64_t s : st.rungs) {
      const auto it = r.rung_loss.find(s);
      csv += "," + (it == r.rung_loss.end() ? std::string() : cell(it->second));
    }
    csv += "," + csv_field(d + "/" + r.trial.name()) + "\n";
  }
  io::write_file_atomic(d + "/sweep.csv", csv);
  for (size_t k = 0; k < spec.params.size(); ++k) {
    io::write_file_atomic(d + "/" + svg_name(spec.params[k].key), scatter(spec.params[k], st, k));
  }
  // report.md
  std::string md = fmt::format("# Sweep report\n\nSweep `{}`: base config `{}`", spec.file, spec.base);
  if (!spec.overrides.empty()) md += fmt::format(" with `{}`", fmt::join(spec.overrides, "` `"));
  md += fmt::format("; {} search, {} trial(s) of {} steps", spec.search, st.trials.size(), st.steps);
  if (!st.rungs.empty()) {
    md += fmt::format("; successive halving: trials compared by eval loss at steps {}, the best 1/{} kept at each",
                      fmt::join(st.rungs, ", "), spec.halving.eta);
  }
  md += ".\n\n";
  const TrialRecord* best = best_trial(st);
  if (best) {
    md += fmt::format("**Best trial: {}** (`{}`): final eval loss {:.4f} at step {} (best during the run {:.4f}), "
                      "{:.0f} tokens/s. Run directory `{}/{}`. Command:\n\n```sh\n{}\n```\n\n",
                      best->trial.name(), best->trial.describe(), *best->final_eval_loss, best->reached,
                      best->best_eval_loss.value_or(NAN), best->tokens_per_s, d, best->trial.name(), best->command);
  } else {
    md += "**No trial has finished yet.**\n\n";
  }
  md += "## Trials\n\n| trial |";
  for (const auto& p : spec.params) md += " " + p.key + " |";
  md += " status | steps | eval loss | best eval loss | tokens/s |\n|---|";
  for (size_t i = 0; i < spec.params.size(); ++i) md += "---|";
  md += "---|---|---|---|---|\n";
  for (const auto& r : st.trials) {
    md += "| " + r.trial.name() + (best == &r ? " (best)" : "") + " |";
    for (const auto& [k, v] : r.trial.params) md += " " + v + " |";
    const auto l = last_loss(r);
    md += fmt::format(" {}{} | {} | {} | {} | {:.0f} |\n", status_name(r.status),
                      r.status == Status::Failed ? ": " + r.error : std::string(), r.reached,
                      l && std::isfinite(*l) ? fmt::format("{:.4f}", *l) : "-",
                      r.best_eval_loss ? fmt::format("{:.4f}", *r.best_eval_loss) : "-", r.tokens_per_s);
  }
  if (!st.decisions.empty()) {
    md += "\n## Successive halving\n\n| rung (step) | compared | kept | stopped |\n|---|---|---|---|\n";
    for (const auto& dec : st.decisions) {
      md += fmt::format("| {} | {} | {} | {} |\n", dec.step, dec.kept.size() + dec.stopped.size(),
                        fmt::join(dec.kept, ", "), fmt::join(dec.stopped, ", "));
    }
  }
  md += "\n## Eval loss vs each swept key\n\nEach trial's last eval loss (at train.steps when finished, at the rung "
        "where it stopped otherwise), labelled with its number.\n\n";
  for (const auto& p : spec.params) md += fmt::format("![eval loss vs {}]({})\n", p.key, svg_name(p.key));
  md += "\nFigures: `sweep.csv`; state: `sweep.json`; each trial's output: `logs/trial_NNN.log`.\n";
  io::write_file_atomic(d + "/report.md", md);
  core::log::info("sweep: wrote {}/sweep.csv, report.md and {} plot(s)", d, spec.params.size());
}

}  // namespace mt::launch::sweep
