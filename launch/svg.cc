// What: the SVG charts of svg.h.
#include "launch/svg.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include <fmt/format.h>

namespace mt::launch {

namespace {
const char* kColors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                         "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
constexpr size_t kNColors = sizeof(kColors) / sizeof(kColors[0]);

// Text for XML (run directory names in legends).
std::string xml_escape(const std::string& t) {
  std::string r;
  for (char c : t) {
    if (c == '<') r += "&lt;";
    else if (c == '>') r += "&gt;";
    else if (c == '&') r += "&amp;";
    else if (c == '\'') r += "&apos;";
    else r += c;
  }
  return r;
}

// Frame, title and axis label; frame() adds a horizontal grid of 5 ticks from ymin to ymax.
void frame_box(std::ostringstream& o, double W, double H, double L, double T, double pw, double ph,
               const std::string& title, const std::string& ylabel) {
  o << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H
    << "' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n"
    << "<text x='" << W / 2 << "' y='20' text-anchor='middle' font-size='14'>" << xml_escape(title) << "</text>\n"
    << "<line x1='" << L << "' y1='" << T + ph << "' x2='" << L + pw << "' y2='" << T + ph << "' stroke='black'/>\n"
    << "<line x1='" << L << "' y1='" << T << "' x2='" << L << "' y2='" << T + ph << "' stroke='black'/>\n"
    << "<text x='15' y='" << T + ph / 2 << "' transform='rotate(-90 15 " << T + ph / 2
    << ")' text-anchor='middle'>" << xml_escape(ylabel) << "</text>\n";
}
void frame(std::ostringstream& o, double W, double H, double L, double T, double pw, double ph, const std::string& title,
           const std::string& ylabel, double ymin, double ymax) {
  frame_box(o, W, H, L, T, pw, ph, title, ylabel);
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
void legend(std::ostringstream& o, double x, double T, size_t s, const std::string& name, size_t color) {
  o << "<rect x='" << x << "' y='" << T + 18 * s << "' width='12' height='12' fill='" << kColors[color % kNColors] << "'/>"
    << "<text class='legend' x='" << x + 18 << "' y='" << T + 18 * s + 10 << "'>" << xml_escape(name) << "</text>\n";
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
    const char* col = kColors[s % kNColors];
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
    legend(o, W - R + 10, T, s, series[s].first, s);
  }
  o << "</svg>\n";
  return o.str();
}

std::string tick_label(double v) {
  if (v == 0) return "0";
  if (std::fabs(v) < 1e9 && std::fabs(v - std::round(v)) < 1e-9 * std::max(1.0, std::fabs(v))) {
    return fmt::format("{:.0f}", v);
  }
  return fmt::format("{:.6g}", v);  // the ticks are round: 6 digits drop only float noise
}

NiceAxis nice_axis(double lo, double hi, bool log, int target) {
  NiceAxis a;
  if (log) {
    if (!(lo > 0)) lo = hi > 0 ? hi / 10 : 1;
    if (!(hi >= lo)) hi = lo;
    const int k0 = static_cast<int>(std::floor(std::log10(lo) + 1e-9));
    int k1 = static_cast<int>(std::ceil(std::log10(hi) - 1e-9));
    if (k1 <= k0) k1 = k0 + 1;
    for (int k = k0; k <= k1; ++k) a.ticks.push_back(std::pow(10.0, k));
    a.lo = a.ticks.front(), a.hi = a.ticks.back();
    return a;
  }
  if (!(hi > lo)) {  // one value (or none): a range around it
    const double m = std::fabs(lo) > 0 ? std::pow(10.0, std::floor(std::log10(std::fabs(lo)))) : 1.0;
    lo -= m, hi += m;
  }
  const double raw = (hi - lo) / std::max(1, target), mag = std::pow(10.0, std::floor(std::log10(raw)));
  // the round step nearest the raw one (Heckbert's "nice numbers")
  const double m = raw / mag;
  const double step = (m < 1.5 ? 1.0 : m < 3.0 ? 2.0 : m < 7.0 ? 5.0 : 10.0) * mag;
  const long long i0 = static_cast<long long>(std::floor(lo / step + 1e-9));
  const long long i1 = static_cast<long long>(std::ceil(hi / step - 1e-9));
  for (long long i = i0; i <= i1; ++i) {
    // a multiple of the step, rounded to the step's precision (0.1 * 3 = 0.30000000000000004)
    const double v = static_cast<double>(i) * step;
    a.ticks.push_back(std::round(v / mag) * mag);
  }
  a.lo = a.ticks.front(), a.hi = a.ticks.back();
  return a;
}

std::string svg_xy_chart(const std::string& title, const std::string& xlabel, const std::string& ylabel,
                         const std::vector<XYSeries>& series, const XYOptions& opt) {
  const double W = 760, H = 420, L = 80, R = 210, T = 40, B = 60;
  const auto usable = [&](double x, double y) {
    return std::isfinite(x) && std::isfinite(y) && (!opt.log_x || x > 0) && (!opt.log_y || y > 0);
  };
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  for (const auto& s : series)
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!usable(s.x[i], s.y[i])) continue;
      xmin = std::min(xmin, s.x[i]), xmax = std::max(xmax, s.x[i]);
      ymin = std::min(ymin, s.y[i]), ymax = std::max(ymax, s.y[i]);
    }
  if (!std::isfinite(xmin)) xmin = xmax = opt.log_x ? 1 : 0;
  if (!std::isfinite(ymin)) ymin = ymax = opt.log_y ? 1 : 0;
  const NiceAxis ax = nice_axis(xmin, xmax, opt.log_x, 6), ay = nice_axis(ymin, ymax, opt.log_y, 5);
  const double pw = W - L - R, ph = H - T - B;
  const auto pos = [](double v, const NiceAxis& a, bool log) {
    return log ? (std::log10(v) - std::log10(a.lo)) / (std::log10(a.hi) - std::log10(a.lo)) : (v - a.lo) / (a.hi - a.lo);
  };
  auto X = [&](double v) { return L + pos(v, ax, opt.log_x) * pw; };
  auto Y = [&](double v) { return T + ph - pos(v, ay, opt.log_y) * ph; };
  std::ostringstream o;
  frame_box(o, W, H, L, T, pw, ph, title, ylabel);
  for (double v : ay.ticks)
    o << "<text class='ytick' x='" << L - 5 << "' y='" << Y(v) + 4 << "' text-anchor='end'>" << tick_label(v) << "</text>\n"
      << "<line x1='" << L << "' y1='" << Y(v) << "' x2='" << L + pw << "' y2='" << Y(v) << "' stroke='#ddd'/>\n";
  for (double v : ax.ticks)
    o << "<text class='xtick' x='" << X(v) << "' y='" << T + ph + 18 << "' text-anchor='middle'>" << tick_label(v)
      << "</text>\n<line x1='" << X(v) << "' y1='" << T + ph << "' x2='" << X(v) << "' y2='" << T + ph + 4
      << "' stroke='black'/>\n";
  o << "<text x='" << L + pw / 2 << "' y='" << H - 15 << "' text-anchor='middle'>" << xlabel << "</text>\n";
  for (size_t s = 0; s < series.size(); ++s) {
    const size_t col = series[s].color >= 0 ? static_cast<size_t>(series[s].color) : s;
    o << "<polyline class='series' data-name='" << xml_escape(series[s].name) << "' fill='none' stroke='" << kColors[col % kNColors]
      << "' stroke-width='1.5'" << (series[s].dashed ? " stroke-dasharray='6,3'" : "") << " points='";
    for (size_t i = 0; i < series[s].x.size(); ++i)
      if (usable(series[s].x[i], series[s].y[i])) o << X(series[s].x[i]) << "," << Y(series[s].y[i]) << " ";
    o << "'/>\n";
    legend(o, W - R + 10, T, s, series[s].name, col);
  }
  o << "</svg>\n";
  return o.str();
}

}  // namespace mt::launch
