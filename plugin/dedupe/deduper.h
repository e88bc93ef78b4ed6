// FIDEDUPERANGE, the only way this program changes a file's extents.
//
// The kernel locks both ranges, compares the bytes and only then shares the extent, so this
// is safe against files that change underneath: a mismatch is reported, never written.
//
// Two layers: dedupe_onto batches a range and its targets into calls within the limits below
// and continues partial progress; fideduperange_call is one call, the ioctl. dedupe_onto
// reaches the call through FilesystemQueries::dedupe_call, so the batching is tested against
// a model (tests/unit/test_dedupe_onto.cpp) and runs against the kernel (KernelQueries).
#pragma once

#include "plugin/dedupe/filesystem_queries.h"

#include <cstddef>
#include <cstdint>
#include <vector>

namespace snapdedupe {

struct DedupeResult {
    uint64_t deduped = 0; // bytes now shared with the source
    uint64_t differs = 0; // bytes the kernel found different (FILE_DEDUPE_RANGE_DIFFERS)
    int error = 0;        // errno of a failure, 0 if none; EAGAIN: a send holds the root
    bool keeper_gone = false; // `error` came from opening the keeper, not the reference
};

// The kernel accepts many destinations per call; more than this per call only makes one
// call hold its locks longer.
constexpr size_t kMaxTargetsPerCall = 120;
// btrfs dedupes in 16 MiB steps anyway; a call per step bounds how long a range stays locked.
constexpr uint64_t kMaxBytesPerCall = 16 * 1024 * 1024;

// Shares [src_offset, src_offset + length) of `src_fd` into each target at its offset, in
// calls of at most kMaxTargetsPerCall targets and kMaxBytesPerCall bytes.
// One result per target, in order. Partial progress is continued. EAGAIN (a send is reading
// the root) is returned as the target's error: a send holds its root for long, so the run
// defers the whole extent instead of waiting here.
// Just before each call its source and destination ranges are read into the page cache
// (FilesystemQueries::prefetch), so the kernel's page-by-page compare does not wait on the
// disk for each page; after it, what was read is dropped again (release).
std::vector<DedupeResult> dedupe_onto(FilesystemQueries& fs, int src_fd, uint64_t src_offset, uint64_t length,
                                      const std::vector<DedupeTarget>& targets);

// One FIDEDUPERANGE ioctl, as FilesystemQueries::dedupe_call describes it (KernelQueries'
// answer). The caller keeps within the limits above.
std::vector<DedupeCallResult> fideduperange_call(int src_fd, uint64_t src_offset, uint64_t length,
                                                 const std::vector<DedupeTarget>& targets);

} // namespace snapdedupe
