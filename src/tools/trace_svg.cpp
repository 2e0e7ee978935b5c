#include "tools/trace_svg.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "tools/trace_summary.hpp"

namespace potemkin::tools {

namespace {

constexpr double kWidth = 760;
constexpr double kPanelHeight = 150;
constexpr double kLeft = 150, kRight = 20, kTop = 40, kGap = 30, kBottom = 40;

std::string xml_escape(std::string_view s) {
    std::string out;
    for (char c : s) {
        switch (c) {
            case '&':
                out += "&amp;";
                break;
            case '<':
                out += "&lt;";
                break;
            case '>':
                out += "&gt;";
                break;
            case '"':
                out += "&quot;";
                break;
            default:
                // Control characters are not allowed in XML 1.0 text.
                out += (static_cast<unsigned char>(c) < 0x20) ? '?' : c;
        }
    }
    return out;
}

std::string duration_label(double ns) {
    if (ns >= 1e9) return fmt::format("{:g} s", ns / 1e9);
    if (ns >= 1e6) return fmt::format("{:g} ms", ns / 1e6);
    if (ns >= 1e3) return fmt::format("{:g} µs", ns / 1e3);
    return fmt::format("{:g} ns", ns);
}

// The device's name as the panel's label: it must fit the column left of the plot.
std::string panel_label(const std::string& device) {
    if (device == "-") return "unassigned";
    constexpr size_t kMax = 20;
    if (device.size() <= kMax) return xml_escape(device);
    return xml_escape(device.substr(0, kMax - 3)) + "...";
}

int decade_below(uint64_t ns) {
    return ns <= 1 ? 0 : static_cast<int>(std::floor(std::log10(static_cast<double>(ns))));
}

}  // namespace

std::vector<HistogramBin> log_histogram(const std::vector<uint64_t>& sorted, int first_decade,
                                        int last_decade) {
    std::vector<HistogramBin> bins;
    const int n = (last_decade - first_decade) * kBinsPerDecade;
    for (int i = 0; i < n; ++i) {
        const double lo = std::pow(10.0, first_decade + double(i) / kBinsPerDecade);
        const double hi = std::pow(10.0, first_decade + double(i + 1) / kBinsPerDecade);
        bins.push_back({lo, hi, 0});
    }
    if (bins.empty()) return bins;
    for (uint64_t v : sorted) {
        const double x = std::max(1.0, static_cast<double>(v));
        int i =
            static_cast<int>(std::floor((std::log10(x) - first_decade) * kBinsPerDecade + 1e-9));
        i = std::clamp(i, 0, n - 1);
        // Guard the floating-point edge: a value exactly on a bin's upper edge belongs above.
        while (i + 1 < n && x >= bins[size_t(i)].high_ns) ++i;
        while (i > 0 && x < bins[size_t(i)].low_ns) --i;
        ++bins[size_t(i)].count;
    }
    return bins;
}

std::string latency_svg(const std::vector<std::pair<std::string, std::vector<uint64_t>>>& devices,
                        const std::string& title) {
    uint64_t lo = UINT64_MAX, hi = 0;
    for (const auto& [d, v] : devices)
        if (!v.empty()) {
            lo = std::min(lo, v.front());
            hi = std::max(hi, v.back());
        }
    const int first = hi == 0 ? 0 : decade_below(std::max<uint64_t>(lo, 1));
    const int last = std::max(first + 1, decade_below(std::max<uint64_t>(hi, 1)) + 1);
    const double plot_w = kWidth - kLeft - kRight;
    auto x_of = [&](double ns) {
        const double l = std::log10(std::max(1.0, ns));
        return kLeft + (l - first) / (last - first) * plot_w;
    };

    const size_t panels = std::max<size_t>(devices.size(), 1);
    const double height = kTop + double(panels) * (kPanelHeight + kGap) + kBottom - kGap;
    std::string s = fmt::format(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" "
        "viewBox=\"0 0 {0} {1}\" font-family=\"sans-serif\" font-size=\"12\">\n"
        "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        "<text x=\"{2}\" y=\"22\" font-size=\"15\" font-weight=\"bold\">{3}</text>\n",
        kWidth, height, kLeft, xml_escape(title));
    if (devices.empty())
        s += fmt::format("<text x=\"{}\" y=\"{}\">no accesses with durations</text>\n", kLeft,
                         kTop + 40);

    double y0 = kTop;
    for (const auto& [device, values] : devices) {
        const auto bins = log_histogram(values, first, last);
        uint64_t peak = 1;
        for (const auto& b : bins) peak = std::max(peak, b.count);
        const double base = y0 + kPanelHeight;
        s += fmt::format("<g>\n<text x=\"10\" y=\"{}\" font-weight=\"bold\">{}</text>\n", y0 + 16,
                         panel_label(device));
        s += fmt::format("<text x=\"10\" y=\"{}\">{} access{}</text>\n", y0 + 32, values.size(),
                         values.size() == 1 ? "" : "es");
        if (auto p = nearest_rank(values, 50))
            s += fmt::format("<text x=\"10\" y=\"{}\">p50 {}</text>\n", y0 + 48,
                             duration_label(double(*p)));
        if (auto p = nearest_rank(values, 99))
            s += fmt::format("<text x=\"10\" y=\"{}\">p99 {}</text>\n", y0 + 64,
                             duration_label(double(*p)));
        if (!values.empty())
            s += fmt::format("<text x=\"10\" y=\"{}\">max {}</text>\n", y0 + 80,
                             duration_label(double(values.back())));
        // Axes, the count scale (linear) and the bars.
        s += fmt::format(
            "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"black\"/>\n"
            "<line x1=\"{0}\" y1=\"{3}\" x2=\"{0}\" y2=\"{1}\" stroke=\"black\"/>\n"
            "<text x=\"{4}\" y=\"{5}\" text-anchor=\"end\" font-size=\"10\">{6}</text>\n",
            kLeft, base, kLeft + plot_w, y0, kLeft - 4, y0 + 10, peak);
        for (const auto& b : bins) {
            if (b.count == 0) continue;
            const double x1 = x_of(b.low_ns), x2 = x_of(b.high_ns);
            const double h = double(b.count) / double(peak) * (kPanelHeight - 4);
            s += fmt::format(
                "<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" "
                "fill=\"#4a78b5\"><title>{} to {}: {}</title></rect>\n",
                x1 + 0.5, base - h, std::max(0.5, x2 - x1 - 1), h, duration_label(b.low_ns),
                duration_label(b.high_ns), b.count);
        }
        for (auto [pct, colour] : {std::pair{50u, "#d9822b"}, std::pair{99u, "#c23030"}})
            if (auto p = nearest_rank(values, pct)) {
                const double x = x_of(double(*p));
                s += fmt::format(
                    "<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"{3}\" "
                    "stroke-dasharray=\"4 3\"/>\n"
                    "<text x=\"{4:.1f}\" y=\"{5}\" fill=\"{3}\" font-size=\"10\">p{6}</text>\n",
                    x, y0, base, colour, x + 3, y0 + 10 + (pct == 99 ? 12 : 0), pct);
            }
        // Decade ticks, labelled under every panel.
        for (int d = first; d <= last; ++d) {
            const double x = x_of(std::pow(10.0, d));
            s += fmt::format(
                "<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"black\"/>\n"
                "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\" font-size=\"10\">{4}"
                "</text>\n",
                x, base, base + 4, base + 15, duration_label(std::pow(10.0, d)));
        }
        s += "</g>\n";
        y0 += kPanelHeight + kGap;
    }
    s += fmt::format(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">access duration (log scale, {} bins per "
        "decade); bar height: accesses in the bin</text>\n</svg>\n",
        kLeft + plot_w / 2, height - 8, kBinsPerDecade);
    return s;
}

}  // namespace potemkin::tools
