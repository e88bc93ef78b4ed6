// The dedupe stage's counters, listed once.
//
// SNAPDEDUPE_DEDUPE_COUNTERS is the one list: the struct's members, `add`, the table below and
// through it the JSON report and the tests are generated from it, so a counter added here
// appears everywhere and cannot be summed or printed under a stale name. Each line is
// `X(name, "meaning")`; the name is also the JSON key. Keep that exact form: tooling reads the
// keys from this file with the regex ^\s*X\((\w+),
#pragma once

#include <cstdint>

#define SNAPDEDUPE_DEDUPE_COUNTERS(X) \
    X(duplicate_bytes, "new blocks whose bytes were already indexed elsewhere") \
    X(deduped_bytes, "of those, bytes now shared with the older copy") \
    X(differs_bytes, "bytes the kernel found different at dedupe time") \
    X(skipped_writable_bytes, "left alone: a writable subvolume references them (--readonly-only)") \
    X(skipped_partial_bytes, "left alone: their extent also holds bytes no copy of which exists") \
    X(skipped_cost_bytes, "left alone: moving them would cost more metadata than it frees") \
    X(extents_planned, "duplicate extents whose every reference is to move") \
    X(extents_moved, "of those, extents whose every reference moved: freed") \
    X(predicted_freed_bytes, "disk bytes of the planned extents") \
    X(predicted_metadata_bytes, "estimated metadata the moves rewrite (all copies)") \
    X(large_fanout_extents, "extents with more references than one ioctl carries") \
    X(references_moved, "file ranges (in any snapshot) moved onto the keeper") \
    X(compared_bytes, "bytes of the ranges handed to the kernel to compare: each keeper range and every reference") \
    X(dedupe_errors, "ranges that failed with an error that can pass (EROFS, EIO, ENOSPC): kept for the next run") \
    X(dedupe_refused, "ranges the kernel refuses for good (EINVAL: a nodatasum and a checksummed file; EPERM: immutable): dropped") \
    X(busy_deferred, "ranges still EAGAIN (a send was running) after retries")

namespace snapdedupe {

// Counters of the dedupe stage, summed over snapshots and filesystems.
struct DedupeCounters {
#define SNAPDEDUPE_COUNTER_MEMBER(name, meaning) uint64_t name = 0;
    SNAPDEDUPE_DEDUPE_COUNTERS(SNAPDEDUPE_COUNTER_MEMBER)
#undef SNAPDEDUPE_COUNTER_MEMBER

    void add(const DedupeCounters& other);
};

// One counter as data: what code that treats every counter alike (sums, JSON, tests) iterates.
struct DedupeCounterField {
    const char* name;    // the member's name and the JSON key
    const char* meaning;
    uint64_t DedupeCounters::*member;
};

inline constexpr DedupeCounterField kDedupeCounterFields[] = {
#define SNAPDEDUPE_COUNTER_FIELD(name, meaning) {#name, meaning, &DedupeCounters::name},
    SNAPDEDUPE_DEDUPE_COUNTERS(SNAPDEDUPE_COUNTER_FIELD)
#undef SNAPDEDUPE_COUNTER_FIELD
};

inline void DedupeCounters::add(const DedupeCounters& other)
{
    for (const DedupeCounterField& field : kDedupeCounterFields)
        this->*field.member += other.*field.member;
}

} // namespace snapdedupe
