//===- SvgLineChart.cpp - Line charts as SVG text -------------------------===//

#include "lib/support/SvgLineChart.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cstdio>
#include <cmath>
#include <limits>

using namespace momac;

namespace {

// Colors that stay apart for the eye (Okabe-Ito), one per label.
constexpr const char *kColors[] = {"#0072B2", "#D55E00", "#009E73",
                                   "#CC79A7", "#E69F00", "#56B4E9",
                                   "#000000", "#F0E442"};

std::string escape(llvm::StringRef text) {
  std::string out;
  for (char c : text) {
    if (c == '&')
      out += "&amp;";
    else if (c == '<')
      out += "&lt;";
    else if (c == '>')
      out += "&gt;";
    else if (c == '"')
      out += "&quot;";
    else
      out += c;
  }
  return out;
}

/// A tick's text: short, in engineering style for large values (2.5e12).
std::string tickText(double value) {
  double magnitude = std::fabs(value);
  if (magnitude != 0 && (magnitude >= 1e5 || magnitude < 1e-3))
    return llvm::formatv("{0:e1}", value).str();
  char text[32];
  std::snprintf(text, sizeof(text), "%g", value); // 2.5, not 2.50
  return text;
}

} // namespace

std::vector<double> momac::niceTicks(double lo, double hi,
                                     int approximateCount) {
  if (!(hi > lo))
    return {lo};
  double raw = (hi - lo) / std::max(1, approximateCount);
  double power = std::pow(10.0, std::floor(std::log10(raw)));
  double step = power;
  for (double multiple : {1.0, 2.0, 5.0, 10.0})
    if (multiple * power >= raw) {
      step = multiple * power;
      break;
    }
  // Multiples of the step, each computed from its index (no drift). A range
  // a few float steps wide next to its values has no nice ticks: its ends.
  double first = std::ceil(lo / step - 1e-9), last = std::floor(hi / step + 1e-9);
  if (first + 1 == first ||
      !(last - first >= 0 && last - first <= 4.0 * approximateCount + 4))
    return {lo, hi};
  std::vector<double> ticks;
  for (int k = 0; k <= int(last - first); ++k)
    ticks.push_back(first + k == 0 ? 0.0 : (first + k) * step);
  return ticks;
}

std::string momac::renderLineCharts(llvm::ArrayRef<ChartPanel> panels,
                                    llvm::StringRef xLabel,
                                    llvm::StringRef yLabel) {
  const double panelWidth = 420, panelHeight = 300;
  const double left = 70, right = 20, top = 40, bottom = 55, legendHeight = 30;
  const double width = panels.size() * (panelWidth + left + right);
  const double height = top + panelHeight + bottom + legendHeight;

  llvm::StringMap<std::string> colorOf;
  std::vector<std::string> labels;
  for (const ChartPanel &panel : panels)
    for (const ChartSeries &series : panel.series)
      if (!colorOf.count(series.label)) {
        colorOf[series.label] =
            kColors[labels.size() % (sizeof(kColors) / sizeof(kColors[0]))];
        labels.push_back(series.label);
      }

  std::string svg;
  llvm::raw_string_ostream os(svg);
  os << llvm::formatv("<svg xmlns=\"http://www.w3.org/2000/svg\" "
                      "width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
                      "font-family=\"sans-serif\" font-size=\"12\">\n",
                      width, height);
  os << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  for (auto [index, panel] : llvm::enumerate(panels)) {
    const double x0 = index * (panelWidth + left + right) + left, y0 = top;
    double xMin = std::numeric_limits<double>::infinity(), xMax = -xMin;
    double yMin = xMin, yMax = -xMin;
    // A non-finite value is no point (it would write NaN coordinates).
    for (const ChartSeries &series : panel.series)
      for (auto [x, y] : series.points) {
        if (!std::isfinite(x) || !std::isfinite(y))
          continue;
        xMin = std::min(xMin, x), xMax = std::max(xMax, x);
        yMin = std::min(yMin, y), yMax = std::max(yMax, y);
      }
    if (!(xMax >= xMin) || !std::isfinite(xMax - xMin) ||
        !std::isfinite(yMax - yMin))
      xMin = 0, xMax = 1, yMin = 0, yMax = 1;
    if (xMax == xMin)
      xMax = xMin + 1;
    if (yMax == yMin)
      yMax = yMin + 1;
    double pad = 0.04 * (yMax - yMin);
    yMin -= pad, yMax += pad;
    xMin = std::min(xMin, 0.0);
    auto sx = [&](double x) {
      return x0 + (x - xMin) / (xMax - xMin) * panelWidth;
    };
    auto sy = [&](double y) {
      return y0 + (1 - (y - yMin) / (yMax - yMin)) * panelHeight;
    };

    os << llvm::formatv("<text x=\"{0}\" y=\"{1}\" text-anchor=\"middle\" "
                        "font-size=\"14\" font-weight=\"bold\">{2}</text>\n",
                        x0 + panelWidth / 2, top - 15, escape(panel.title));
    os << llvm::formatv("<rect x=\"{0}\" y=\"{1}\" width=\"{2}\" "
                        "height=\"{3}\" fill=\"none\" stroke=\"#444\"/>\n",
                        x0, y0, panelWidth, panelHeight);
    for (double t : niceTicks(xMin, xMax, 5)) {
      double x = sx(t);
      os << llvm::formatv("<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" "
                          "stroke=\"#ddd\"/>\n",
                          x, y0, y0 + panelHeight);
      os << llvm::formatv("<text x=\"{0}\" y=\"{1}\" text-anchor=\"middle\">"
                          "{2}</text>\n",
                          x, y0 + panelHeight + 16, tickText(t));
    }
    for (double t : niceTicks(yMin, yMax, 6)) {
      double y = sy(t);
      os << llvm::formatv("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" "
                          "stroke=\"#ddd\"/>\n",
                          x0, y, x0 + panelWidth);
      os << llvm::formatv("<text x=\"{0}\" y=\"{1}\" text-anchor=\"end\">"
                          "{2}</text>\n",
                          x0 - 6, y + 4, tickText(t));
    }
    os << llvm::formatv("<text x=\"{0}\" y=\"{1}\" text-anchor=\"middle\">"
                        "{2}</text>\n",
                        x0 + panelWidth / 2, y0 + panelHeight + 36,
                        escape(xLabel));
    os << llvm::formatv("<text transform=\"translate({0},{1}) rotate(-90)\" "
                        "text-anchor=\"middle\">{2}</text>\n",
                        x0 - 50, y0 + panelHeight / 2, escape(yLabel));
    for (const ChartSeries &series : panel.series) {
      if (series.points.empty())
        continue;
      os << llvm::formatv("<polyline fill=\"none\" stroke=\"{0}\" "
                          "stroke-width=\"1.8\" points=\"",
                          colorOf[series.label]);
      for (auto [x, y] : series.points)
        if (std::isfinite(x) && std::isfinite(y))
          os << llvm::formatv("{0:F1},{1:F1} ", sx(x), sy(y));
      os << "\"><title>" << escape(series.label) << "</title></polyline>\n";
    }
  }
  double legendX = left, legendY = top + panelHeight + bottom + 12;
  for (const std::string &label : labels) {
    os << llvm::formatv("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" "
                        "stroke=\"{3}\" stroke-width=\"3\"/>\n",
                        legendX, legendY, legendX + 24, colorOf[label]);
    os << llvm::formatv("<text x=\"{0}\" y=\"{1}\">{2}</text>\n",
                        legendX + 30, legendY + 4, escape(label));
    legendX += 40 + 7.5 * label.size();
  }
  os << "</svg>\n";
  return svg;
}
