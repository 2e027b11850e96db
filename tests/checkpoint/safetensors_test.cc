// Safetensors reader/writer tests: round trips per dtype, header layout (sorted keys, aligned
// data), and one crafted file per validation rule, each expected to fail naming the file and the
// problem.
#include "common/safetensors.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "tests/checkpoint/test_util.h"

namespace moe {
namespace {

using test::readFile;
using test::writeFile;

std::string littleEndianU64(uint64_t v) {
  std::string s;
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return s;
}

uint64_t readLittleEndianU64(const std::string& s) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(s[static_cast<size_t>(i)]);
  return v;
}

// A safetensors file from raw parts: length prefix, header text, `dataBytes` bytes of data.
std::string craft(const std::string& header, size_t dataBytes) {
  return littleEndianU64(header.size()) + header + std::string(dataBytes, '\x5a');
}

std::vector<std::byte> encode(DType t, const std::vector<float>& values) {
  std::vector<std::byte> out(values.size() * dtypeSize(t));
  for (size_t i = 0; i < values.size(); ++i) {
    if (t == DType::kF32) {
      std::memcpy(out.data() + 4 * i, &values[i], 4);
    } else {
      uint16_t h = t == DType::kBF16 ? floatToBf16(values[i]) : floatToF16(values[i]);
      std::memcpy(out.data() + 2 * i, &h, 2);
    }
  }
  return out;
}

std::vector<float> decode(const SafetensorsFile& f, const TensorInfo& t) {
  std::vector<float> out(t.numel());
  convertToF32(t.dtype, f.bytes(t), out);
  return out;
}

class SafetensorsRoundTrip : public test::TempDirTest,
                             public ::testing::WithParamInterface<DType> {};

TEST_P(SafetensorsRoundTrip, ValuesAndShapesSurvive) {
  const DType dt = GetParam();
  // Exactly representable in f32, bf16 and f16 alike, so every dtype must return them unchanged.
  const std::vector<float> representable = {0.0f,  1.0f,    -2.0f,     0.5f,   0.375f, -3.5f,
                                            96.0f, -0.125f, 1.0f / 64, -40.0f, 7.0f,   0.25f};
  // Not representable in 16 bits: the stored bytes must still be exactly what the writer got.
  const std::vector<float> arbitrary = {0.1f, -3.14159f, 1e-3f, 12345.678f, -0.3333f, 2.71828f};

  SafetensorsWriter w;
  w.add("b.matrix", dt, {3, 4}, encode(dt, representable));
  w.add("a.vector", dt, {6}, encode(dt, arbitrary));
  w.add("c.scalar", dt, {}, encode(dt, {42.0f}));
  w.add("d.empty", dt, {0, 3}, {});
  const std::string file = path("rt.safetensors");
  ASSERT_TRUE(w.write(file)) << "write failed";
  EXPECT_FALSE(std::filesystem::exists(file + ".tmp"));

  auto opened = SafetensorsFile::open(file);
  ASSERT_TRUE(opened) << opened.error();
  const SafetensorsFile& f = *opened.value();
  EXPECT_EQ(f.path(), file);
  ASSERT_EQ(f.tensors().size(), 4u);

  const TensorInfo* m = f.find("b.matrix");
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->dtype, dt);
  EXPECT_EQ(m->shape, (std::vector<uint64_t>{3, 4}));
  EXPECT_EQ(m->numel(), 12u);
  EXPECT_EQ(m->nbytes, 12 * dtypeSize(dt));
  EXPECT_EQ(decode(f, *m), representable);

  const TensorInfo* v = f.find("a.vector");
  ASSERT_NE(v, nullptr);
  const std::vector<std::byte> expected = encode(dt, arbitrary);
  auto stored = f.bytes(*v);
  ASSERT_EQ(stored.size(), expected.size());
  EXPECT_EQ(std::memcmp(stored.data(), expected.data(), expected.size()), 0);
  if (dt == DType::kF32) {
    EXPECT_EQ(decode(f, *v), arbitrary);
  }

  const TensorInfo* s = f.find("c.scalar");
  ASSERT_NE(s, nullptr);
  EXPECT_TRUE(s->shape.empty());
  EXPECT_EQ(decode(f, *s), std::vector<float>{42.0f});

  const TensorInfo* e = f.find("d.empty");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->numel(), 0u);
  EXPECT_EQ(f.bytes(*e).size(), 0u);

  EXPECT_EQ(f.find("missing"), nullptr);
  EXPECT_EQ(f.find("b.matri"), nullptr);
}

INSTANTIATE_TEST_SUITE_P(AllDTypes, SafetensorsRoundTrip,
                         ::testing::Values(DType::kF32, DType::kBF16, DType::kF16),
                         [](const auto& info) { return std::string(dtypeName(info.param)); });

class SafetensorsTest : public test::TempDirTest {};

// "U8" (gpt-oss MXFP4 *_blocks / *_scales): raw bytes, written and read back as they are.
TEST_F(SafetensorsTest, U8TensorsKeepTheirBytes) {
  std::vector<std::byte> blocks(2 * 3 * 16), scales(2 * 3);
  for (size_t i = 0; i < blocks.size(); ++i) blocks[i] = std::byte(i * 7 + 1);
  for (size_t i = 0; i < scales.size(); ++i) scales[i] = std::byte(120 + i);
  SafetensorsWriter w;
  w.add("experts.down_proj_blocks", DType::kU8, {2, 3, 1, 16}, blocks);
  w.add("experts.down_proj_scales", DType::kU8, {2, 3, 1}, scales);
  const std::string file = path("u8.safetensors");
  ASSERT_TRUE(w.write(file));
  EXPECT_NE(readFile(file).find(R"("dtype":"U8")"), std::string::npos);
  auto f = SafetensorsFile::open(file);
  ASSERT_TRUE(f) << f.error();
  for (const auto& [name, want, shape] :
       {std::tuple{"experts.down_proj_blocks", blocks, std::vector<uint64_t>{2, 3, 1, 16}},
        std::tuple{"experts.down_proj_scales", scales, std::vector<uint64_t>{2, 3, 1}}}) {
    const TensorInfo* t = f.value()->find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->dtype, DType::kU8);
    EXPECT_EQ(t->shape, shape);
    EXPECT_EQ(t->nbytes, want.size());
    auto got = f.value()->bytes(*t);
    EXPECT_TRUE(std::equal(got.begin(), got.end(), want.begin(), want.end())) << name;
  }
}

TEST_F(SafetensorsTest, HeaderKeysSortedOffsetsConsecutiveDataAligned) {
  SafetensorsWriter w;
  // Added out of order, with sizes that leave the header at an arbitrary length.
  w.add("zeta", DType::kF32, {3}, encode(DType::kF32, {1, 2, 3}));
  w.add("alpha", DType::kBF16, {1}, encode(DType::kBF16, {1}));
  w.add("mid.weight", DType::kF16, {2, 2}, encode(DType::kF16, {1, 2, 3, 4}));
  const std::string file = path("sorted.safetensors");
  ASSERT_TRUE(w.write(file));

  const std::string raw = readFile(file);
  const uint64_t n = readLittleEndianU64(raw);
  EXPECT_EQ((8 + n) % 8, 0u) << "data section must start 8-byte aligned";
  ASSERT_LE(8 + n, raw.size());

  // ordered_json keeps the keys in file order, so this sees what a reader of the bytes sees.
  auto header = nlohmann::ordered_json::parse(raw.substr(8, n));
  std::vector<std::string> keys;
  for (const auto& [k, _] : header.items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"__metadata__", "alpha", "mid.weight", "zeta"}));

  uint64_t expectedBegin = 0;
  for (const auto& [k, entry] : header.items()) {
    if (k == "__metadata__") continue;
    EXPECT_EQ(entry["data_offsets"][0].get<uint64_t>(), expectedBegin) << k;
    expectedBegin = entry["data_offsets"][1].get<uint64_t>();
  }
  EXPECT_EQ(expectedBegin, 2u + 8u + 12u);
  EXPECT_EQ(raw.size(), 8 + n + expectedBegin);
  EXPECT_EQ(header["zeta"]["dtype"], "F32");
  EXPECT_EQ(header["alpha"]["dtype"], "BF16");
  EXPECT_EQ(header["mid.weight"]["dtype"], "F16");

  auto f = SafetensorsFile::open(file);
  ASSERT_TRUE(f) << f.error();
  EXPECT_EQ(f.value()->tensors().size(), 3u);  // __metadata__ is not a tensor
}

TEST_F(SafetensorsTest, WriterRejectsWrongSizeAndDuplicates) {
  SafetensorsWriter wrongSize;
  wrongSize.add("t", DType::kF32, {2, 2}, std::vector<std::byte>(12));
  Status s = wrongSize.write(path("a.safetensors"));
  EXPECT_FALSE(s);
  EXPECT_NE(s.message().find("tensor t has 12 bytes"), std::string::npos) << s.message();

  SafetensorsWriter dup;
  dup.add("t", DType::kF32, {1}, std::vector<std::byte>(4));
  dup.add("t", DType::kF32, {1}, std::vector<std::byte>(4));
  s = dup.write(path("b.safetensors"));
  EXPECT_FALSE(s);
  EXPECT_NE(s.message().find("tensor t added twice"), std::string::npos) << s.message();
}

TEST_F(SafetensorsTest, MissingFile) {
  const std::string file = path("nope.safetensors");
  auto f = SafetensorsFile::open(file);
  ASSERT_FALSE(f);
  EXPECT_NE(f.error().find(file), std::string::npos) << f.error();
  EXPECT_NE(f.error().find("cannot open"), std::string::npos) << f.error();
}

TEST_F(SafetensorsTest, TruncatedRealFile) {
  SafetensorsWriter w;
  w.add("a", DType::kF32, {4}, encode(DType::kF32, {1, 2, 3, 4}));
  w.add("b", DType::kF32, {4}, encode(DType::kF32, {5, 6, 7, 8}));
  const std::string file = path("cut.safetensors");
  ASSERT_TRUE(w.write(file));
  std::filesystem::resize_file(file, std::filesystem::file_size(file) - 3);
  auto f = SafetensorsFile::open(file);
  ASSERT_FALSE(f);
  EXPECT_NE(f.error().find(file), std::string::npos) << f.error();
  EXPECT_NE(f.error().find("tensor b: data_offsets end 32 is beyond the data section (29 bytes"),
            std::string::npos)
      << f.error();
}

// One crafted file per validation rule.
struct Malformed {
  const char* name;
  std::string bytes;
  const char* problem;  // must appear in the error, after the file path
};

class SafetensorsMalformed : public test::TempDirTest,
                             public ::testing::WithParamInterface<Malformed> {};

TEST_P(SafetensorsMalformed, FailsNamingFileAndProblem) {
  const std::string file = path("bad.safetensors");
  writeFile(file, GetParam().bytes);
  auto f = SafetensorsFile::open(file);
  ASSERT_FALSE(f) << "opened a malformed file";
  EXPECT_EQ(f.error().rfind(file + ": ", 0), 0u) << f.error();
  EXPECT_NE(f.error().find(GetParam().problem), std::string::npos) << f.error();
}

const std::string kF32x2 = R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})";

INSTANTIATE_TEST_SUITE_P(
    Cases, SafetensorsMalformed,
    ::testing::Values(
        Malformed{"Empty", "", "file is 0 bytes, shorter than the 8-byte header length"},
        Malformed{"ShorterThan8", "abc", "file is 3 bytes, shorter than the 8-byte header length"},
        Malformed{"HeaderLengthBeyondFile", littleEndianU64(100) + "{}",
                  "header length 100 exceeds the file size 10 minus 8"},
        Malformed{"HeaderLengthAbsurd", littleEndianU64(1ull << 40) + "{}", "is absurd"},
        Malformed{"HeaderLengthHuge", littleEndianU64(~0ull) + "{}", "is absurd"},
        Malformed{"InvalidJson", craft("{\"a\": ", 0), "header is not valid JSON"},
        Malformed{"NotAnObject", craft("[1, 2]", 0), "header is not a JSON object"},
        Malformed{"MetadataNotObject", craft(R"({"__metadata__":"pt"})", 0),
                  "__metadata__ is not a JSON object"},
        Malformed{"MetadataNonString", craft(R"({"__metadata__":{"step":3}})", 0),
                  "__metadata__ value for 'step' is not a string"},
        Malformed{"EntryNotObject", craft(R"({"t":[1]})", 0),
                  "tensor t: entry is not a JSON object"},
        Malformed{"UnsupportedDType",
                  craft(R"({"t":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", 8),
                  "tensor t: unsupported dtype I64"},
        Malformed{"MissingDType", craft(R"({"t":{"shape":[1],"data_offsets":[0,4]}})", 4),
                  "tensor t: 'dtype' missing"},
        Malformed{"MissingShape", craft(R"({"t":{"dtype":"F32","data_offsets":[0,4]}})", 4),
                  "tensor t: 'shape' missing"},
        Malformed{"NegativeShape",
                  craft(R"({"t":{"dtype":"F32","shape":[-1,2],"data_offsets":[0,8]}})", 8),
                  "tensor t: shape [-1,2] must be an array of non-negative integers"},
        Malformed{"FractionalShape",
                  craft(R"({"t":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4),
                  "must be an array of non-negative integers"},
        Malformed{"MissingOffsets", craft(R"({"t":{"dtype":"F32","shape":[1]}})", 4),
                  "tensor t: 'data_offsets' must be [begin, end]"},
        Malformed{"OffsetsWrongArity",
                  craft(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})", 8),
                  "tensor t: 'data_offsets' must be [begin, end]"},
        Malformed{"OffsetsNegative",
                  craft(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", 8),
                  "tensor t: 'data_offsets' must be [begin, end]"},
        Malformed{"OffsetsBeginAfterEnd",
                  craft(R"({"t":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", 8),
                  "tensor t: data_offsets [8,4] has begin > end"},
        Malformed{"OffsetsBeyondData",
                  craft(R"({"t":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8),
                  "tensor t: data_offsets end 16 is beyond the data section (8 bytes"},
        Malformed{"SizeNotShapeTimesDType",
                  craft(R"({"t":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,16]}})", 16),
                  "tensor t: data_offsets span 16 bytes but shape [2,2] x BF16 needs 8"},
        Malformed{"ShapeOverflow",
                  craft(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296],)"
                        R"("data_offsets":[0,0]}})",
                        0),
                  "tensor t: shape [4294967296,4294967296] overflows a 64-bit byte count"},
        Malformed{"Overlap",
                  craft(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                        R"("b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
                        24),
                  "tensor b overlaps tensor a"},
        Malformed{"OverlapInsideLongTensor",
                  craft(R"({"big":{"dtype":"F32","shape":[8],"data_offsets":[0,32]},)"
                        R"("c":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},)"
                        R"("d":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}})",
                        32),
                  "overlaps tensor big"},
        Malformed{"DuplicateName", craft(R"({"t":)" + kF32x2 + R"(,"t":)" + kF32x2 + "}", 8),
                  "tensor t appears twice in the header"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST_F(SafetensorsTest, HandCraftedValidFileWithMetadataAndPadding) {
  // Trailing spaces are how writers pad the header; metadata is free-form strings.
  std::string header = R"({"__metadata__":{"format":"pt"},"t":)" + kF32x2 + "}    ";
  std::string data(8, '\0');
  const float values[2] = {1.5f, -2.0f};
  std::memcpy(data.data(), values, 8);
  const std::string file = path("ok.safetensors");
  writeFile(file, littleEndianU64(header.size()) + header + data);
  auto f = SafetensorsFile::open(file);
  ASSERT_TRUE(f) << f.error();
  ASSERT_EQ(f.value()->tensors().size(), 1u);
  EXPECT_EQ(decode(*f.value(), f.value()->tensors()[0]), (std::vector<float>{1.5f, -2.0f}));
}

}  // namespace
}  // namespace moe
