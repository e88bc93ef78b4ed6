// Byte counts as the report prints them: "0 B", "1023 B", "1.00 KiB", "-1.50 GiB".
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace snapdedupe {

// Binary units up to TiB, two decimals above bytes. Signed, because the report prints
// differences (metadata usually grows while data is freed).
inline std::string human_bytes(int64_t n)
{
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    // Through double, so INT64_MIN has a magnitude too.
    double v = n < 0 ? -static_cast<double>(n) : static_cast<double>(n);
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        ++u;
    }
    char buf[48];
    std::snprintf(buf, sizeof buf, u == 0 ? "%s%.0f %s" : "%s%.2f %s", n < 0 ? "-" : "", v, units[u]);
    return buf;
}

} // namespace snapdedupe
