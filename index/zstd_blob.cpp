#include "index/zstd_blob.h"

#include <zstd.h>

#include <stdexcept>

namespace snapdedupe {

std::vector<uint8_t> zstd_compress(const std::string& data)
{
    std::vector<uint8_t> out(ZSTD_compressBound(data.size()));
    size_t n = ZSTD_compress(out.data(), out.size(), data.data(), data.size(), 3);
    if (ZSTD_isError(n))
        throw std::runtime_error(std::string("zstd: ") + ZSTD_getErrorName(n));
    out.resize(n);
    return out;
}

std::string zstd_decompress(const std::vector<uint8_t>& frame)
{
    unsigned long long size = ZSTD_getFrameContentSize(frame.data(), frame.size());
    if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size > (1ULL << 32))
        throw std::runtime_error("zstd: damaged frame in index");
    std::string out(size, '\0');
    size_t n = ZSTD_decompress(out.data(), out.size(), frame.data(), frame.size());
    if (ZSTD_isError(n) || n != size)
        throw std::runtime_error("zstd: damaged frame in index");
    return out;
}

} // namespace snapdedupe
