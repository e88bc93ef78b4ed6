// Table-driven CRC32C. No library that Debian ships for C/C++ exposes crc32c (zlib has
// only CRC-32/IEEE, and the kernel's version is not exported to user space), and send
// streams are small enough per command that a byte-at-a-time table is fast enough.
#include "snapshots/crc32c.h"

#include <array>

namespace snapdedupe {

namespace {

constexpr uint32_t kCastagnoliReflected = 0x82F63B78u;

constexpr std::array<uint32_t, 256> make_table()
{
    std::array<uint32_t, 256> table{};
    for (uint32_t i = 0; i < 256; ++i) {
        uint32_t crc = i;
        for (int bit = 0; bit < 8; ++bit)
            crc = (crc & 1u) ? (crc >> 1) ^ kCastagnoliReflected : crc >> 1;
        table[i] = crc;
    }
    return table;
}

constexpr std::array<uint32_t, 256> kTable = make_table();

} // namespace

uint32_t crc32c(uint32_t seed, const void* data, std::size_t len)
{
    const auto* bytes = static_cast<const unsigned char*>(data);
    uint32_t crc = seed;
    for (std::size_t i = 0; i < len; ++i)
        crc = kTable[(crc ^ bytes[i]) & 0xFFu] ^ (crc >> 8);
    return crc;
}

} // namespace snapdedupe
