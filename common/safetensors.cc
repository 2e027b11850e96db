// Safetensors reader (mmap + header validation) and writer (sorted header, 8-byte aligned data,
// atomic rename). Every reader error names the file, because a serving process may open dozens of
// shards and "bad header" alone does not say which one to re-download.
#include "common/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

namespace moe {
namespace {

using nlohmann::json;

// A header this large is a corrupt length field, not a real model: the biggest public checkpoints
// have headers of a few hundred KB. Refusing early avoids parsing gigabytes of tensor data as JSON.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;
constexpr uint64_t kDataAlignment = 8;

// Closes a descriptor on every return path of open().
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() {
    if (fd_ >= 0) ::close(fd_);
  }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;

 private:
  int fd_;
};

uint64_t readLittleEndianU64(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | std::to_integer<uint64_t>(p[i]);
  return v;
}

void appendLittleEndianU64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::string safetensorsDTypeName(DType t) {
  switch (t) {
    case DType::kF32:
      return "F32";
    case DType::kBF16:
      return "BF16";
    case DType::kF16:
      return "F16";
    case DType::kF64:
      return "F64";
    case DType::kF8E4M3:
      return "F8_E4M3";
    case DType::kF8E5M2:
      return "F8_E5M2";
    case DType::kU8:
      return "U8";
  }
  return "?";
}

// numel * elementSize without wrapping; nullopt on overflow.
std::optional<uint64_t> checkedByteCount(const std::vector<uint64_t>& shape, size_t elementSize) {
  uint64_t n = elementSize;
  for (uint64_t d : shape) {
    if (__builtin_mul_overflow(n, d, &n)) return std::nullopt;
  }
  return n;
}

// Parses one header entry into `info`; returns an error text (without the file prefix) or "".
std::string parseTensorEntry(const std::string& name, const json& entry, uint64_t dataSize,
                             TensorInfo& info) {
  const std::string where = "tensor " + name + ": ";
  if (!entry.is_object()) return where + "entry is not a JSON object";

  auto dt = entry.find("dtype");
  if (dt == entry.end() || !dt->is_string()) return where + "'dtype' missing or not a string";
  auto parsed = parseSafetensorsDType(dt->get_ref<const std::string&>());
  if (!parsed) {
    return where + "unsupported dtype " + dt->get<std::string>() +
           " (supported: F32, BF16, F16, F64, F8_E4M3, F8_E5M2)";
  }

  auto sh = entry.find("shape");
  if (sh == entry.end() || !sh->is_array()) return where + "'shape' missing or not an array";
  std::vector<uint64_t> shape;
  for (const json& d : *sh) {
    // nlohmann stores non-negative integers as number_unsigned; negatives and floats land
    // elsewhere.
    if (!d.is_number_unsigned()) {
      return where + "shape " + sh->dump() + " must be an array of non-negative integers";
    }
    shape.push_back(d.get<uint64_t>());
  }

  auto off = entry.find("data_offsets");
  if (off == entry.end() || !off->is_array() || off->size() != 2 ||
      !(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned()) {
    return where + "'data_offsets' must be [begin, end] with non-negative integers";
  }
  const uint64_t begin = (*off)[0].get<uint64_t>();
  const uint64_t end = (*off)[1].get<uint64_t>();
  if (begin > end) {
    return where + "data_offsets [" + std::to_string(begin) + "," + std::to_string(end) +
           "] has begin > end";
  }
  if (end > dataSize) {
    return where + "data_offsets end " + std::to_string(end) + " is beyond the data section (" +
           std::to_string(dataSize) + " bytes; file truncated?)";
  }
  auto expected = checkedByteCount(shape, dtypeSize(*parsed));
  if (!expected) return where + "shape " + formatShape(shape) + " overflows a 64-bit byte count";
  if (end - begin != *expected) {
    return where + "data_offsets span " + std::to_string(end - begin) + " bytes but shape " +
           formatShape(shape) + " x " + safetensorsDTypeName(*parsed) + " needs " +
           std::to_string(*expected);
  }

  info.name = name;
  info.dtype = *parsed;
  info.shape = std::move(shape);
  info.offset = begin;
  info.nbytes = end - begin;
  return "";
}

}  // namespace

std::string formatShape(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

uint64_t TensorInfo::numel() const {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;  // open() already proved the byte count fits in 64 bits
  return n;
}

Result<std::unique_ptr<SafetensorsFile>> SafetensorsFile::open(const std::string& path) {
  auto fail = [&path](const std::string& problem) { return makeError(path + ": " + problem); };

  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(std::string("cannot open: ") + std::strerror(errno));
  FdCloser closer(fd);

  struct stat st {};
  if (::fstat(fd, &st) != 0) return fail(std::string("cannot stat: ") + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return fail("not a regular file");
  const uint64_t fileSize = static_cast<uint64_t>(st.st_size);
  if (fileSize < 8) {
    return fail("file is " + std::to_string(fileSize) +
                " bytes, shorter than the 8-byte header length");
  }

  // The private constructor rules out make_unique; the pointer is owned from the first moment.
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  void* map = ::mmap(nullptr, fileSize, PROT_READ, MAP_PRIVATE, fd, 0);
  if (map == MAP_FAILED) return fail(std::string("cannot mmap: ") + std::strerror(errno));
  file->map_ = static_cast<const std::byte*>(map);
  file->mapSize_ = fileSize;

  const uint64_t headerLen = readLittleEndianU64(file->map_);
  if (headerLen > kMaxHeaderBytes) {
    return fail("header length " + std::to_string(headerLen) + " is absurd (> 100 MB)");
  }
  if (headerLen > fileSize - 8) {
    return fail("header length " + std::to_string(headerLen) + " exceeds the file size " +
                std::to_string(fileSize) + " minus 8");
  }
  const uint64_t dataSize = fileSize - 8 - headerLen;
  file->data_ = file->map_ + 8 + headerLen;

  // nlohmann keeps the last of duplicate keys silently; a parser callback sees every top-level key
  // (depth 1) so duplicates can be rejected rather than one tensor quietly shadowing another.
  std::set<std::string> seen;
  std::string duplicate;
  auto onEvent = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && duplicate.empty()) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!seen.insert(key).second) duplicate = key;
    }
    return true;
  };
  const char* headerBegin = reinterpret_cast<const char*>(file->map_ + 8);
  json header;
  try {
    header = json::parse(headerBegin, headerBegin + headerLen, onEvent);
  } catch (const json::exception& e) {  // parse errors, and out_of_range for a number like 1e400
    return fail(std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) return fail("header is not a JSON object");
  if (!duplicate.empty()) return fail("tensor " + duplicate + " appears twice in the header");

  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return fail("__metadata__ is not a JSON object");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) return fail("__metadata__ value for '" + key + "' is not a string");
      }
      continue;
    }
    TensorInfo info;
    std::string problem = parseTensorEntry(name, entry, dataSize, info);
    if (!problem.empty()) return fail(problem);
    file->tensors_.push_back(std::move(info));
  }

  // Overlap check on a copy ordered by position; tensors_ itself stays sorted by name for find().
  std::vector<const TensorInfo*> byOffset;
  for (const TensorInfo& t : file->tensors_) byOffset.push_back(&t);
  std::sort(byOffset.begin(), byOffset.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return std::pair(a->offset, a->offset + a->nbytes) <
           std::pair(b->offset, b->offset + b->nbytes);
  });
  const TensorInfo* furthest = nullptr;  // the tensor whose bytes reach furthest so far
  for (const TensorInfo* t : byOffset) {
    if (furthest && t->offset < furthest->offset + furthest->nbytes) {
      return fail("tensor " + t->name + " overlaps tensor " + furthest->name);
    }
    if (!furthest || t->offset + t->nbytes > furthest->offset + furthest->nbytes) furthest = t;
  }

  std::sort(file->tensors_.begin(), file->tensors_.end(),
            [](const TensorInfo& a, const TensorInfo& b) { return a.name < b.name; });
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(const_cast<std::byte*>(map_), mapSize_);
}

// tensors_ is sorted by name, so it doubles as the name index.
const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                             [](const TensorInfo& t, std::string_view n) { return t.name < n; });
  if (it == tensors_.end() || it->name != name) return nullptr;
  return &*it;
}

std::span<const std::byte> SafetensorsFile::bytes(const TensorInfo& t) const {
  return {data_ + t.offset, static_cast<size_t>(t.nbytes)};
}

void SafetensorsWriter::add(std::string name, DType dtype, std::vector<uint64_t> shape,
                            std::vector<std::byte> data) {
  entries_.push_back(Entry{std::move(name), dtype, std::move(shape), std::move(data)});
}

Status SafetensorsWriter::write(const std::string& path) const {
  std::vector<const Entry*> sorted;
  for (const Entry& e : entries_) sorted.push_back(&e);
  std::sort(sorted.begin(), sorted.end(),
            [](const Entry* a, const Entry* b) { return a->name < b->name; });

  // nlohmann's default object is a std::map, so dump() emits keys in sorted order.
  json header = json::object();
  header["__metadata__"] = {{"format", "pt"}};
  uint64_t offset = 0;
  for (size_t i = 0; i < sorted.size(); ++i) {
    const Entry& e = *sorted[i];
    if (e.name == "__metadata__") return Status::error(path + ": '__metadata__' is reserved");
    if (i > 0 && sorted[i - 1]->name == e.name) {
      return Status::error(path + ": tensor " + e.name + " added twice");
    }
    auto expected = checkedByteCount(e.shape, dtypeSize(e.dtype));
    if (!expected || *expected != e.data.size()) {
      return Status::error(path + ": tensor " + e.name + " has " + std::to_string(e.data.size()) +
                           " bytes, shape " + formatShape(e.shape) + " x " +
                           safetensorsDTypeName(e.dtype) + " needs " +
                           (expected ? std::to_string(*expected) : "more than 2^64"));
    }
    header[e.name] = {{"dtype", safetensorsDTypeName(e.dtype)},
                      {"shape", e.shape},
                      {"data_offsets", {offset, offset + e.data.size()}}};
    offset += e.data.size();
  }

  // Pad with spaces (valid JSON whitespace) so the data section starts 8-byte aligned, which lets
  // readers view f32 data in place.
  std::string headerText = header.dump();
  while ((8 + headerText.size()) % kDataAlignment != 0) headerText.push_back(' ');
  std::string prefix;
  appendLittleEndianU64(prefix, headerText.size());

  // Write to a temporary name and rename so a reader never sees a half-written file.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return Status::error(tmp + ": cannot create: " + std::strerror(errno));
    out.write(prefix.data(), static_cast<std::streamsize>(prefix.size()));
    out.write(headerText.data(), static_cast<std::streamsize>(headerText.size()));
    for (const Entry* e : sorted) {
      out.write(reinterpret_cast<const char*>(e->data.data()),
                static_cast<std::streamsize>(e->data.size()));
    }
    out.close();
    if (!out) {
      std::remove(tmp.c_str());
      return Status::error(tmp + ": write failed: " + std::strerror(errno));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    std::remove(tmp.c_str());
    return Status::error(path + ": cannot rename from " + tmp + ": " + std::strerror(err));
  }
  return Status::ok();
}

}  // namespace moe
