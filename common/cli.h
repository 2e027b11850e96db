// Command lines of every moe-cluster program, one set of conventions on top of CLI11:
//   --help      prints the usage to stdout, exit 0
//   --version   prints "<program> <version>" (common/version.h) to stdout, exit 0
//   anything wrong (a value that is not a number or out of range, a missing value, an unknown
//   flag, a missing required flag) prints "<program>: <flag>: <reason>" and a hint to stderr,
//   exit kUsageExit (2, the same status as an InvalidArgument error: common/rpc_status.h).
// The validators below say the reason in words ("--tokens: -5 is out of range (expected 1 to
// 1000000000)"). Attach them with Option::transform: they run on the text before CLI11 converts
// it (and rewrite integers as plain decimal), so a value that reaches the program is in range.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace moe::cli {

inline constexpr int kUsageExit = 2;

// "moe-router 0.1.0": what --version prints.
std::string versionLine(std::string_view program);

// Adds --version and the error format above to `app` (constructed as CLI::App{description,
// program}). Defaults are shown in --help.
void setUp(CLI::App& app);

// Parses the command line. std::nullopt: go on. Otherwise the program ends with the returned
// status, its message already printed (0 after --help or --version, kUsageExit after an error).
std::optional<int> parse(CLI::App& app, int argc, const char* const* argv);

// For checks that span flags (done after parse): prints "<program>: <message>" and the hint,
// returns kUsageExit.
int usageError(const CLI::App& app, std::string_view message);

// An integer in [min, max] written in decimal ("12", not "12.0", "0x10" or "12k").
CLI::Validator integer(int64_t min, int64_t max);
CLI::Validator unsignedInteger(uint64_t min, uint64_t max = UINT64_MAX);
// A finite decimal number in [min, max]; with `minExclusive` the minimum itself is refused.
CLI::Validator number(double min, double max, bool minExclusive = false);
// One of `choices` exactly.
CLI::Validator oneOf(std::vector<std::string> choices);
// A comma-separated list of unsigned integers in [min, max] ("0,2,5"); the empty string is the
// empty list when `allowEmpty`.
CLI::Validator unsignedList(uint64_t min, uint64_t max, bool allowEmpty);
// Not the empty string.
CLI::Validator nonEmpty();

// "0,2,5" → {0, 2, 5}, for a value unsignedList already accepted.
std::vector<uint64_t> splitUnsignedList(std::string_view text);

}  // namespace moe::cli
