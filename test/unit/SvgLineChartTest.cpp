//===- SvgLineChartTest.cpp - Ticks and SVG of momarun plot ---------------===//

#include "lib/support/SvgLineChart.h"

#include <gtest/gtest.h>

#include <cmath>
#include <regex>

using namespace momac;

namespace {

void expectTicks(const std::vector<double> &got,
                 const std::vector<double> &want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_NEAR(got[i], want[i], 1e-12 * std::max(1.0, std::fabs(want[i])));
}

// The step is the smallest 1, 2 or 5 times a power of ten that splits the
// range into at most about `count` parts; ticks are its multiples inside.
TEST(NiceTicks, AreMultiplesOfOneTwoOrFiveTimesAPowerOfTen) {
  expectTicks(niceTicks(0, 10, 5), {0, 2, 4, 6, 8, 10});
  expectTicks(niceTicks(2.31, 2.77, 4), {2.4, 2.6});
  expectTicks(niceTicks(2.31, 2.77, 6), {2.4, 2.5, 2.6, 2.7});
  expectTicks(niceTicks(0, 3.1e12, 5), {0, 1e12, 2e12, 3e12});
  expectTicks(niceTicks(-0.3, 0.3, 6), {-0.3, -0.2, -0.1, 0, 0.1, 0.2, 0.3});
  expectTicks(niceTicks(1, 1, 5), {1});
  // A range a few float steps wide next to its values: just its ends.
  expectTicks(niceTicks(1e17, 1e17 + 16, 5), {1e17, 1e17 + 16});
}

size_t count(const std::string &text, const std::string &what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos;
       at = text.find(what, at + 1))
    ++n;
  return n;
}

TEST(RenderLineCharts, OneCurvePerSeriesAndOneLegendEntryPerLabel) {
  std::vector<ChartPanel> panels = {
      {"all tokens",
       {{"dense", {{0, 3.0}, {1e9, 2.5}, {2e9, 2.0}}},
        {"moe <4t4i> & co", {{0, 3.1}, {1e9, 2.4}}}}},
      {"text tokens", {{"dense", {{0, 3.2}, {2e9, 2.1}}}}}};
  std::string svg = renderLineCharts(panels, "training FLOPs", "loss");
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_EQ(count(svg, "<polyline"), 3u);
  // Labels are escaped; "dense" has one color in both panels and one legend
  // entry.
  EXPECT_NE(svg.find("moe &lt;4t4i&gt; &amp; co"), std::string::npos);
  EXPECT_EQ(svg.find("moe <4t4i>"), std::string::npos);
  std::regex denseColor("stroke=\"(#[0-9A-F]{6})\"[^>]*points=\"[^\"]*\"><title>dense<");
  std::smatch first;
  ASSERT_TRUE(std::regex_search(svg, first, denseColor));
  EXPECT_EQ(count(svg, "stroke=\"" + first[1].str() + "\" stroke-width=\"1.8\""),
            2u);
  EXPECT_EQ(count(svg, ">dense</text>"), 1u);
  EXPECT_NE(svg.find(">all tokens</text>"), std::string::npos);
  EXPECT_NE(svg.find(">text tokens</text>"), std::string::npos);
}

} // namespace
