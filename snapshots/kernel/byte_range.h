// A range of a file's bytes: what a send stream says changed, what FIEMAP is asked about, what
// the index cuts into blocks. One type for all of them, so no layer converts another's.
#pragma once

#include <cstdint>

namespace snapdedupe {

struct ByteRange {
    uint64_t offset = 0;
    uint64_t length = 0;
    bool operator==(const ByteRange&) const = default;
};

} // namespace snapdedupe
