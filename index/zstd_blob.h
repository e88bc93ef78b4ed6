// zstd for what is bulky in the index (lists of paths), so the index stays small.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace snapdedupe {

std::vector<uint8_t> zstd_compress(const std::string& data);
// Throws std::runtime_error on a damaged frame.
std::string zstd_decompress(const std::vector<uint8_t>& frame);

} // namespace snapdedupe
