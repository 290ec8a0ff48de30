// What: two small SVG charts (hand-written: no plotting library is packaged for C++ here,
// and the charts are simple): lines or stacked bars over categories (scaling reports), and
// lines over a numeric x axis (loss curves for `meshtrain plot`).
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace mt::launch {

using Series = std::pair<std::string, std::vector<double>>;
std::string svg_chart(const std::string& title, const std::vector<std::string>& labels,
                      const std::vector<Series>& series, bool stacked, const std::string& ylabel);

struct XYSeries {
  std::string name;
  std::vector<double> x, y;
  int color = -1;      // palette index (-1: the series' index)
  bool dashed = false;  // e.g. eval beside train, top-5 beside top-1
};
// Log axes take the log of positive values (others are left out) and tick at decades.
struct XYOptions {
  bool log_x = false, log_y = false;
};
std::string svg_xy_chart(const std::string& title, const std::string& xlabel, const std::string& ylabel,
                         const std::vector<XYSeries>& series, const XYOptions& opt = {});

// An axis over data in [lo, hi] with round ticks: linear, the step is 1, 2 or 5 x 10^k nearest
// (range / target), and the axis runs from the tick at or below lo to the one at
// or above hi; log, the ticks are the decades 10^k around [lo, hi] (lo > 0). lo == hi gets a
// range around the value.
struct NiceAxis {
  double lo = 0, hi = 1;
  std::vector<double> ticks;
};
NiceAxis nice_axis(double lo, double hi, bool log = false, int target = 5);
// A tick's text: "0.002", "150", "1e-05" (log axes), no float noise ("0.30000000000000004").
std::string tick_label(double v);

}  // namespace mt::launch
