// CRC32C (Castagnoli), in the raw form btrfs send uses to checksum each command.
#pragma once

#include <cstddef>
#include <cstdint>

namespace snapdedupe {

// Raw reflected CRC32C (polynomial 0x82F63B78) continuing from `seed`, with no initial
// or final inversion -- the kernel's crc32c(seed, buf, len). btrfs send stores
// crc32c(0, command) with the header's crc field zeroed; that convention was checked
// against real streams (see tests/unit/test_send_stream.cpp). The textbook CRC32C
// (iSCSI, check value 0xE3069283 for "123456789") is ~crc32c(~0u, ...).
uint32_t crc32c(uint32_t seed, const void* data, std::size_t len);

} // namespace snapdedupe
