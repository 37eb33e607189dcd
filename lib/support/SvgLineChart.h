//===- SvgLineChart.h - Line charts as SVG text ------------------*- C++ -*-===//
//
// Panels of line charts side by side, with axes, ticks and a legend, as one
// SVG document: what momarun plot draws loss curves with. Written by hand
// because the format is a few elements and any browser renders it; no
// plotting library is needed at run time.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_LIB_SUPPORT_SVGLINECHART_H
#define MOMAC_LIB_SUPPORT_SVGLINECHART_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"

#include <string>
#include <utility>
#include <vector>

namespace momac {

struct ChartSeries {
  std::string label;
  std::vector<std::pair<double, double>> points; // (x, y), x ascending
};

struct ChartPanel {
  std::string title;
  std::vector<ChartSeries> series;
};

/// An SVG document: one panel per entry, each with its own y range, all
/// with `xLabel` and `yLabel`; series with the same label share a color
/// across panels, and the legend lists the labels once.
std::string renderLineCharts(llvm::ArrayRef<ChartPanel> panels,
                             llvm::StringRef xLabel, llvm::StringRef yLabel);

/// "Nice" tick values (1, 2 or 5 times a power of ten) covering [lo, hi].
std::vector<double> niceTicks(double lo, double hi, int approximateCount);

} // namespace momac

#endif // MOMAC_LIB_SUPPORT_SVGLINECHART_H
