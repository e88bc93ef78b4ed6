// Subvolume and filesystem uuids, as the kernel stores them and as btrfs-progs prints them.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace snapdedupe {

using Uuid = std::array<uint8_t, 16>;
std::string uuid_to_string(const Uuid& uuid);
bool uuid_is_null(const Uuid& uuid);

} // namespace snapdedupe
