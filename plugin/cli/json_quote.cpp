#include "plugin/cli/json_quote.h"

#include <algorithm>
#include <cstdint>

namespace snapdedupe {

namespace {

constexpr char kHexDigits[] = "0123456789abcdef";

// The length of the valid UTF-8 sequence starting at bytes[i], or 0 if none does. The ranges
// of the second byte are those of the Unicode standard's table 3-7: they rule out overlong
// forms (E0 80..9F, F0 80..8F), surrogates (ED A0..BF) and code points past U+10FFFF (F4 90..).
size_t utf8_sequence_length(std::string_view bytes, size_t i)
{
    auto at = [&](size_t k) { return static_cast<uint8_t>(bytes[k]); };
    uint8_t lead = at(i);
    if (lead < 0x80)
        return 1;
    size_t length = 0;
    uint8_t second_lo = 0x80, second_hi = 0xbf;
    if (lead >= 0xc2 && lead <= 0xdf)
        length = 2;
    else if (lead >= 0xe0 && lead <= 0xef)
        length = 3;
    else if (lead >= 0xf0 && lead <= 0xf4)
        length = 4;
    else
        return 0; // a continuation byte, C0/C1 (always overlong), or F5..FF (never valid)
    if (lead == 0xe0)
        second_lo = 0xa0;
    else if (lead == 0xed)
        second_hi = 0x9f;
    else if (lead == 0xf0)
        second_lo = 0x90;
    else if (lead == 0xf4)
        second_hi = 0x8f;
    if (bytes.size() - i < length)
        return 0;
    if (at(i + 1) < second_lo || at(i + 1) > second_hi)
        return 0;
    for (size_t k = 2; k < length; ++k)
        if (at(i + k) < 0x80 || at(i + k) > 0xbf)
            return 0;
    return length;
}

void append_u00(std::string& out, uint8_t byte)
{
    out += "\\u00";
    out += kHexDigits[byte >> 4];
    out += kHexDigits[byte & 0xf];
}

// The sibling's entry for `value`: its bytes in hex, or null when it is valid UTF-8.
std::string hex_or_null(std::string_view value)
{
    return is_valid_utf8(value) ? "null" : "\"" + hex_bytes(value) + "\"";
}

std::string hex_key(std::string_view key)
{
    return json_quote(std::string(key) + "_bytes_hex") + ": ";
}

} // namespace

bool is_valid_utf8(std::string_view bytes)
{
    for (size_t i = 0; i < bytes.size();) {
        size_t n = utf8_sequence_length(bytes, i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

std::string json_quote(std::string_view bytes)
{
    std::string out = "\"";
    out.reserve(bytes.size() + 2);
    for (size_t i = 0; i < bytes.size();) {
        size_t n = utf8_sequence_length(bytes, i);
        uint8_t c = static_cast<uint8_t>(bytes[i]);
        if (n == 0 || c < 0x20 || c == 0x7f) {
            append_u00(out, c); // not UTF-8, or a control character JSON wants escaped
            ++i;
            continue;
        }
        if (c == '"' || c == '\\')
            out += '\\';
        out.append(bytes.substr(i, n));
        i += n;
    }
    return out + "\"";
}

std::string hex_bytes(std::string_view bytes)
{
    std::string out;
    out.reserve(bytes.size() * 2);
    for (unsigned char c : bytes) {
        out += kHexDigits[c >> 4];
        out += kHexDigits[c & 0xf];
    }
    return out;
}

std::string json_bytes_member(std::string_view key, std::string_view value)
{
    std::string out = json_quote(key) + ": " + json_quote(value);
    if (!is_valid_utf8(value))
        out += ", " + hex_key(key) + hex_or_null(value);
    return out;
}

std::string json_bytes_list_member(std::string_view key, const std::vector<std::string>& values)
{
    std::string out = json_quote(key) + ": [";
    for (size_t i = 0; i < values.size(); ++i)
        out += (i ? ", " : "") + json_quote(values[i]);
    out += "]";
    if (std::all_of(values.begin(), values.end(), [](const std::string& v) { return is_valid_utf8(v); }))
        return out;
    out += ", " + hex_key(key) + "[";
    for (size_t i = 0; i < values.size(); ++i)
        out += (i ? ", " : "") + hex_or_null(values[i]);
    return out + "]";
}

std::string json_bytes_pairs_member(std::string_view key,
                                    const std::vector<std::pair<std::string, std::string>>& values)
{
    std::string out = json_quote(key) + ": [";
    bool all_valid = true;
    for (size_t i = 0; i < values.size(); ++i) {
        const auto& [first, second] = values[i];
        out += (i ? ", [" : "[") + json_quote(first) + ", " + json_quote(second) + "]";
        all_valid = all_valid && is_valid_utf8(first) && is_valid_utf8(second);
    }
    out += "]";
    if (all_valid)
        return out;
    out += ", " + hex_key(key) + "[";
    for (size_t i = 0; i < values.size(); ++i)
        out += (i ? ", [" : "[") + hex_or_null(values[i].first) + ", " + hex_or_null(values[i].second) + "]";
    return out + "]";
}

} // namespace snapdedupe
