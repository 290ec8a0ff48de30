// What: the SVG charts of svg.h.
#include "launch/svg.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include <fmt/format.h>

namespace mt::launch {

namespace {
const char* kColors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"};

// "150000", "2.5", "0.0003": whole numbers in full, the rest with 4 significant digits
std::string tick_label(double v) {
  if (std::fabs(v) < 1e9 && std::fabs(v - std::round(v)) < 1e-9 * std::max(1.0, std::fabs(v))) {
    return fmt::format("{:.0f}", v);
  }
  return fmt::format("{:.4g}", v);
}

// Frame, title, axis label and horizontal grid with tick values from ymin to ymax.
void frame(std::ostringstream& o, double W, double H, double L, double T, double pw, double ph, const std::string& title,
           const std::string& ylabel, double ymin, double ymax) {
  o << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H
    << "' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n"
    << "<text x='" << W / 2 << "' y='20' text-anchor='middle' font-size='14'>" << title << "</text>\n"
    << "<line x1='" << L << "' y1='" << T + ph << "' x2='" << L + pw << "' y2='" << T + ph << "' stroke='black'/>\n"
    << "<line x1='" << L << "' y1='" << T << "' x2='" << L << "' y2='" << T + ph << "' stroke='black'/>\n"
    << "<text x='15' y='" << T + ph / 2 << "' transform='rotate(-90 15 " << T + ph / 2
    << ")' text-anchor='middle'>" << ylabel << "</text>\n";
  for (int k = 0; k <= 4; ++k) {
    const double v = ymin + (ymax - ymin) * k / 4, y = T + ph - (v - ymin) / (ymax - ymin) * ph;
    o << "<text x='" << L - 5 << "' y='" << y + 4 << "' text-anchor='end'>" << tick_label(v) << "</text>\n"
      << "<line x1='" << L << "' y1='" << y << "' x2='" << L + pw << "' y2='" << y << "' stroke='#ddd'/>\n";
  }
}
// The smallest 4 x (1, 2, 2.5 or 5 x 10^k) >= v, so the 4 grid steps are round numbers.
double nice_top(double v) {
  if (!(v > 0)) return 1;
  const double raw = v / 4, mag = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0}) {
    if (m * mag >= raw * (1 - 1e-12)) return 4 * m * mag;
  }
  return 40 * mag;
}
void legend(std::ostringstream& o, double x, double T, size_t s, const std::string& name) {
  o << "<rect x='" << x << "' y='" << T + 18 * s << "' width='12' height='12' fill='" << kColors[s % 4] << "'/>"
    << "<text x='" << x + 18 << "' y='" << T + 18 * s + 10 << "'>" << name << "</text>\n";
}
}  // namespace

std::string svg_chart(const std::string& title, const std::vector<std::string>& labels,
                      const std::vector<Series>& series, bool stacked, const std::string& ylabel) {
  const double W = 640, H = 360, L = 70, R = 160, T = 40, B = 60;
  double ymax = 0;
  for (size_t i = 0; i < labels.size(); ++i) {
    double acc = 0;
    for (const auto& s : series) acc = stacked ? acc + s.second[i] : std::max(acc, s.second[i]);
    ymax = std::max(ymax, acc);
  }
  ymax = nice_top(ymax * 1.05);
  const double pw = W - L - R, ph = H - T - B, step = pw / std::max<size_t>(1, labels.size());
  auto y = [&](double v) { return T + ph - v / ymax * ph; };
  std::ostringstream o;
  frame(o, W, H, L, T, pw, ph, title, ylabel, 0, ymax);
  for (size_t i = 0; i < labels.size(); ++i) {
    o << "<text x='" << L + step * (i + 0.5) << "' y='" << T + ph + 18 << "' text-anchor='middle'>" << labels[i] << "</text>\n";
  }
  for (size_t s = 0; s < series.size(); ++s) {
    const char* col = kColors[s % 4];
    if (stacked) {
      for (size_t i = 0; i < labels.size(); ++i) {
        double base = 0;
        for (size_t u = 0; u < s; ++u) base += series[u].second[i];
        const double v = series[s].second[i];
        o << "<rect x='" << L + step * i + step * 0.2 << "' y='" << y(base + v) << "' width='" << step * 0.6
          << "' height='" << y(base) - y(base + v) << "' fill='" << col << "'/>\n";
      }
    } else {
      o << "<polyline fill='none' stroke='" << col << "' stroke-width='2' points='";
      for (size_t i = 0; i < labels.size(); ++i) o << L + step * (i + 0.5) << "," << y(series[s].second[i]) << " ";
      o << "'/>\n";
      for (size_t i = 0; i < labels.size(); ++i)
        o << "<circle cx='" << L + step * (i + 0.5) << "' cy='" << y(series[s].second[i]) << "' r='3' fill='" << col << "'/>\n";
    }
    legend(o, W - R + 10, T, s, series[s].first);
  }
  o << "</svg>\n";
  return o.str();
}

std::string svg_xy_chart(const std::string& title, const std::string& xlabel, const std::string& ylabel,
                         const std::vector<XYSeries>& series) {
  const double W = 720, H = 400, L = 70, R = 170, T = 40, B = 60;
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  for (const auto& s : series)
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.y[i])) continue;
      xmin = std::min(xmin, s.x[i]), xmax = std::max(xmax, s.x[i]);
      ymin = std::min(ymin, s.y[i]), ymax = std::max(ymax, s.y[i]);
    }
  if (!(xmax > xmin)) xmin = 0, xmax = std::max(1.0, xmax);
  if (!(ymax > ymin)) ymin = 0, ymax = std::max(1.0, ymax);
  const double pad = 0.05 * (ymax - ymin);
  ymin -= pad, ymax += pad;
  const double pw = W - L - R, ph = H - T - B;
  auto X = [&](double v) { return L + (v - xmin) / (xmax - xmin) * pw; };
  auto Y = [&](double v) { return T + ph - (v - ymin) / (ymax - ymin) * ph; };
  std::ostringstream o;
  frame(o, W, H, L, T, pw, ph, title, ylabel, ymin, ymax);
  for (int k = 0; k <= 4; ++k) {
    const double v = xmin + (xmax - xmin) * k / 4;
    o << "<text x='" << X(v) << "' y='" << T + ph + 18 << "' text-anchor='middle'>" << fmt::format("{:.4g}", v) << "</text>\n";
  }
  o << "<text x='" << L + pw / 2 << "' y='" << H - 15 << "' text-anchor='middle'>" << xlabel << "</text>\n";
  for (size_t s = 0; s < series.size(); ++s) {
    o << "<polyline fill='none' stroke='" << kColors[s % 4] << "' stroke-width='1.5' points='";
    for (size_t i = 0; i < series[s].x.size(); ++i)
      if (std::isfinite(series[s].y[i])) o << X(series[s].x[i]) << "," << Y(series[s].y[i]) << " ";
    o << "'/>\n";
    legend(o, W - R + 10, T, s, series[s].name);
  }
  o << "</svg>\n";
  return o.str();
}

}  // namespace mt::launch
