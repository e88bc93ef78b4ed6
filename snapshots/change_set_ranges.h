// The changed byte ranges of one file, as a send stream's data commands add and remove them.
// Private to ChangeSetBuilder's files (snapshots/change_set_model.h lists them).
#pragma once

#include "snapshots/change_set.h"

#include <cstdint>
#include <vector>

namespace snapdedupe::change_set_model {

// Sorts the ranges and merges overlapping and touching ones; empty ones are dropped.
void merge_ranges(std::vector<ByteRange>& ranges);

// Adds [offset, offset + length). Unmerged: a sequential write extends the last range,
// others pile up until a merge is due (merge_ranges before reading them).
void add_range(std::vector<ByteRange>& ranges, uint64_t offset, uint64_t length);

// Removes [offset, offset + length) from the ranges; length UINT64_MAX - offset clips.
void subtract_range(std::vector<ByteRange>& ranges, uint64_t offset, uint64_t length);

} // namespace snapdedupe::change_set_model
