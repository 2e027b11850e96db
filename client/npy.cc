// .npy reader: the header is a Python dict literal; we read the three keys we need.
#include "client/npy.h"

#include <charconv>
#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>

namespace moe::client {

Result<NpyMatrix> readNpyF32(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return makeError(path + ": cannot open");
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (all.size() < 10 || all.compare(0, 6, "\x93NUMPY") != 0)
    return makeError(path + ": not a .npy file");
  const int major = static_cast<unsigned char>(all[6]);
  size_t headerLen = 0, pos = 0;
  if (major == 1) {
    headerLen = static_cast<unsigned char>(all[8]) |
                static_cast<size_t>(static_cast<unsigned char>(all[9])) << 8;
    pos = 10;
  } else if (major == 2 || major == 3) {
    if (all.size() < 12) return makeError(path + ": truncated header");
    uint32_t len;
    std::memcpy(&len, all.data() + 8, 4);
    headerLen = len;
    pos = 12;
  } else {
    return makeError(path + ": unsupported .npy version " + std::to_string(major));
  }
  if (pos + headerLen > all.size()) return makeError(path + ": truncated header");
  const std::string header = all.substr(pos, headerLen);
  std::smatch m;
  if (!std::regex_search(header, m, std::regex("'descr'\\s*:\\s*'([^']*)'")) || m[1] != "<f4") {
    return makeError(path + ": dtype must be float32 ('<f4'), header says " + header);
  }
  if (!std::regex_search(header, m, std::regex("'fortran_order'\\s*:\\s*(True|False)")) ||
      m[1] != "False") {
    return makeError(path +
                     ": Fortran-ordered arrays are not supported; save with np.ascontiguousarray");
  }
  if (!std::regex_search(header, m,
                         std::regex("'shape'\\s*:\\s*\\(\\s*(\\d+)\\s*,\\s*(\\d+)\\s*,?\\s*\\)"))) {
    return makeError(path + ": expected a 2-D array [tokens, hidden], header says " + header);
  }
  NpyMatrix out;
  const std::string rowsText = m[1], colsText = m[2];
  auto r1 = std::from_chars(rowsText.data(), rowsText.data() + rowsText.size(), out.rows);
  auto r2 = std::from_chars(colsText.data(), colsText.data() + colsText.size(), out.cols);
  // Bound the element count before multiplying, so the byte count cannot wrap.
  constexpr uint64_t kMaxElements = uint64_t{1} << 40;
  if (r1.ec != std::errc() || r2.ec != std::errc() ||
      (out.cols != 0 && out.rows > kMaxElements / out.cols)) {
    return makeError(path + ": shape (" + rowsText + ", " + colsText + ") is too large");
  }
  const size_t dataStart = pos + headerLen;
  const uint64_t need = out.rows * out.cols * 4;
  if (all.size() - dataStart != need) {
    return makeError(path + ": data has " + std::to_string(all.size() - dataStart) +
                     " bytes, shape needs " + std::to_string(need));
  }
  out.values.resize(out.rows * out.cols);
  // An empty vector's data() may be null, and memcpy from/to null is undefined even for 0 bytes.
  if (need > 0) std::memcpy(out.values.data(), all.data() + dataStart, need);
  return out;
}

}  // namespace moe::client
