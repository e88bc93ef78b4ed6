// A JSON string literal for any path: btrfs paths are bytes, so control bytes are escaped.
#pragma once

#include <cstdio>
#include <string>

namespace snapdedupe {

inline std::string json_quote(const std::string& s)
{
    std::string out = "\"";
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
        } else {
            out += static_cast<char>(c);
        }
    }
    return out + "\"";
}

} // namespace snapdedupe
