#include "snapshots/kernel/uuid.h"

#include <algorithm>
#include <cstdio>

namespace snapdedupe {

std::string uuid_to_string(const Uuid& u)
{
    char buf[37];
    std::snprintf(buf, sizeof buf, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
                  u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
    return buf;
}

bool uuid_is_null(const Uuid& u)
{
    return std::all_of(u.begin(), u.end(), [](uint8_t b) { return b == 0; });
}

} // namespace snapdedupe
