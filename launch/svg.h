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
};
std::string svg_xy_chart(const std::string& title, const std::string& xlabel, const std::string& ylabel,
                         const std::vector<XYSeries>& series);

}  // namespace mt::launch
