// The command-line conventions of every moe-cluster program (see cli.h).
#include "common/cli.h"

#include <charconv>
#include <cmath>
#include <iostream>
#include <sstream>

#include "common/version.h"

namespace moe::cli {
namespace {

constexpr std::string_view kHint = "Run with --help for the flags and their values.";

// A whole decimal number, its sign kept apart so that "-5" for an unsigned flag is reported as out
// of range rather than as not a number. `magnitude` saturates at UINT64_MAX.
struct Whole {
  bool negative = false;
  uint64_t magnitude = 0;
  bool overflow = false;
};

std::optional<Whole> parseWhole(std::string_view s) {
  Whole w;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    w.negative = s[0] == '-';
    s.remove_prefix(1);
  }
  if (s.empty()) return std::nullopt;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), w.magnitude);
  if (end != s.data() + s.size()) return std::nullopt;
  if (ec == std::errc::result_out_of_range) {
    w.overflow = true;
    w.magnitude = UINT64_MAX;
  } else if (ec != std::errc()) {
    return std::nullopt;
  }
  return w;
}

std::string inQuotes(std::string_view s) {
  return "'" + std::string(s) + "'";
}

std::string rangeText(const std::string& min, const std::string& max) {
  return "expected " + min + " to " + max;
}

// "" when `s` is a whole number in [min, max], else the reason.
std::string checkUnsigned(std::string_view s, uint64_t min, uint64_t max) {
  auto w = parseWhole(s);
  if (!w) return inQuotes(s) + " is not a whole number";
  const std::string range = rangeText(std::to_string(min), std::to_string(max));
  if ((w->negative && w->magnitude > 0) || w->overflow || w->magnitude < min ||
      w->magnitude > max) {
    return std::string(s) + " is out of range (" + range + ")";
  }
  return "";
}

}  // namespace

std::string versionLine(std::string_view program) {
  return std::string(program) + " " + MOE_VERSION;
}

void setUp(CLI::App& app) {
  app.set_version_flag("--version", versionLine(app.get_name()), "Print the version and exit");
  app.option_defaults()->always_capture_default();
  app.get_formatter()->column_width(34);
}

int usageError(const CLI::App& app, std::string_view message) {
  std::cerr << app.get_name() << ": " << message << "\n" << kHint << "\n";
  return kUsageExit;
}

std::optional<int> parse(CLI::App& app, int argc, const char* const* argv) {
  try {
    app.parse(argc, argv);
    return std::nullopt;
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return 0;
  } catch (const CLI::CallForAllHelp&) {
    std::cout << app.help("", CLI::AppFormatMode::All);
    return 0;
  } catch (const CLI::CallForVersion& e) {
    std::cout << e.what() << "\n";
    return 0;
  } catch (const CLI::RequiredError& e) {
    // CLI11 checks required flags before it reports unknown ones; a mistyped flag is the likelier
    // cause of both, so it is named first.
    if (auto extra = app.remaining(); !extra.empty()) {
      return usageError(app, "The following argument was not expected: " + extra.front());
    }
    return usageError(app, e.what());
  } catch (const CLI::ArgumentMismatch& e) {
    // "--batch: 1 required UINT missing" says it in CLI11's terms.
    const std::string what = e.what();
    const size_t colon = what.find(": ");
    if (colon != std::string::npos && what.find(" missing", colon) != std::string::npos) {
      return usageError(app, what.substr(0, colon) + ": needs a value");
    }
    return usageError(app, what);
  } catch (const CLI::ConversionError& e) {
    // Options are validated as text first (below), so this is a switch given a value it cannot
    // read: "Could not convert: --check = maybe".
    const std::string what = e.what();
    const std::string prefix = "Could not convert: ";
    const size_t eq = what.find(" = ");
    if (what.rfind(prefix, 0) == 0 && eq != std::string::npos) {
      return usageError(app, what.substr(prefix.size(), eq - prefix.size()) + ": '" +
                                 what.substr(eq + 3) +
                                 "' is not a switch value (give no value, or =true|false)");
    }
    return usageError(app, what);
  } catch (const CLI::ParseError& e) {
    // CLI11's own exit codes differ by kind (104, 105, 109 …); every kind here is a usage error.
    return usageError(app, e.what());
  }
}

CLI::Validator unsignedInteger(uint64_t min, uint64_t max) {
  return CLI::Validator(
      [min, max](std::string& s) {
        std::string why = checkUnsigned(s, min, max);
        // Plain decimal for CLI11's conversion, which would read "010" as octal.
        if (why.empty()) s = std::to_string(parseWhole(s)->magnitude);
        return why;
      },
      max == UINT64_MAX ? "INT >= " + std::to_string(min)
                        : "INT in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
}

CLI::Validator integer(int64_t min, int64_t max) {
  return CLI::Validator(
      [min, max](std::string& s) -> std::string {
        auto w = parseWhole(s);
        if (!w) return inQuotes(s) + " is not a whole number";
        // In range of int64 when the magnitude fits; -2^63 is the one value beyond INT64_MAX.
        bool in = !w->overflow;
        int64_t v = 0;
        if (in && w->negative) {
          in = w->magnitude <= uint64_t{1} << 63;
          if (in) v = static_cast<int64_t>(0 - w->magnitude);
        } else if (in) {
          in = w->magnitude <= static_cast<uint64_t>(INT64_MAX);
          if (in) v = static_cast<int64_t>(w->magnitude);
        }
        if (!in || v < min || v > max) {
          return std::string(s) + " is out of range (" +
                 rangeText(std::to_string(min), std::to_string(max)) + ")";
        }
        s = std::to_string(v);  // plain decimal for CLI11's conversion ("010" is not octal)
        return "";
      },
      "INT in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
}

CLI::Validator number(double min, double max, bool minExclusive) {
  auto text = [](double v) {
    std::ostringstream o;
    o << v;
    return o.str();
  };
  const std::string lo = text(min), hi = text(max);
  return CLI::Validator(
      [=](std::string& s) -> std::string {
        double v = 0;
        auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
        if (s.empty() || ec != std::errc() || end != s.data() + s.size() || !std::isfinite(v)) {
          return inQuotes(s) + " is not a finite number";
        }
        if (v < min || v > max || (minExclusive && v == min)) {
          return s + " is out of range (expected " + (minExclusive ? "more than " : "") + lo +
                 " to " + hi + ")";
        }
        return "";
      },
      std::string("NUMBER in ") + (minExclusive ? "(" : "[") + lo + ", " + hi + "]");
}

CLI::Validator oneOf(std::vector<std::string> choices) {
  std::string list;
  for (const auto& c : choices) list += (list.empty() ? "" : "|") + c;
  return CLI::Validator(
      [choices, list](std::string& s) -> std::string {
        for (const auto& c : choices) {
          if (s == c) return "";
        }
        return inQuotes(s) + " is not one of " + list;
      },
      list);
}

CLI::Validator unsignedList(uint64_t min, uint64_t max, bool allowEmpty) {
  return CLI::Validator(
      [=](std::string& s) -> std::string {
        if (s.empty()) return allowEmpty ? "" : "the list is empty";
        std::string_view rest = s;
        while (true) {
          const size_t comma = rest.find(',');
          const std::string_view item = rest.substr(0, comma);
          if (std::string why = checkUnsigned(item, min, max); !why.empty()) {
            return "in list " + inQuotes(s) + ": " + why;
          }
          if (comma == std::string_view::npos) return "";
          rest.remove_prefix(comma + 1);
        }
      },
      "LIST of INT in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
}

CLI::Validator nonEmpty() {
  return CLI::Validator(
      [](std::string& s) { return s.empty() ? std::string("the value is empty") : std::string(); },
      "");
}

std::vector<uint64_t> splitUnsignedList(std::string_view text) {
  std::vector<uint64_t> out;
  while (!text.empty()) {
    const size_t comma = text.find(',');
    out.push_back(parseWhole(text.substr(0, comma)).value_or(Whole{}).magnitude);
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return out;
}

}  // namespace moe::cli
