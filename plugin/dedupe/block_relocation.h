// Where an indexed block's bytes still live when the file it was located in is gone: retention
// deleted its snapshot (before a run, or during one). The bytes usually survive: later
// snapshots share the extent. Moving the block's location there keeps its id, and with it its
// place as keeper, so copies found later are still deduped onto it instead of being indexed
// as new bytes beside it (which would leave both on disk for good).
#pragma once

#include "index/block_index.h"
#include "plugin/dedupe/filesystem_queries.h"

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

namespace snapdedupe {

// Surviving snapshots tried per block, newest first. The newest holds an unchanged file's
// bytes as well as any older one and will be deleted last, so a block moves about once in its
// life; older ones only help for files changed since, and each costs an open.
inline constexpr size_t kMaxRelocationCandidates = 8;

// Moves each of `blocks` that the file `handle` maps at the same offset to the same disk bytes
// (the key the run computes) there; keeps the rest in `blocks`. Returns how many moved.
uint64_t move_mapped(FilesystemQueries& fs, BlockIndex& index, const InodeHandle& handle,
                     std::vector<IndexedBlock>& blocks);

// For a file that lives on but was written in place since (a VM image, a database): moves each
// of `blocks` (located in (inode, generation) of a deleted snapshot) to the newest of `older`
// (surviving snapshots of its lineage, newest first) whose same file maps it; keeps the rest in
// `blocks`. Returns how many moved. A block overwritten in place is mapped by the oldest
// snapshots up to the write and by none after it, so the oldest is asked first (what it does
// not map, none does) and the newest that still maps the rest is found by halving the list:
// about log2(n) tree searches a file, not one per snapshot. A block that the file mapped
// again after a write (a copy deduped back onto it at the same offset) may move to an older
// snapshot than the newest that maps it, or be forgotten: never to one that does not map it.
uint64_t move_to_newest_mapping(FilesystemQueries& fs, BlockIndex& index, const std::vector<uint64_t>& older,
                                uint64_t inode, uint64_t generation, std::vector<IndexedBlock>& blocks);

// Second chance, for files that were replaced: an identical rewrite is a new inode, whose
// extent the run moved onto the keeper. Whoever references the block's extent now, in a
// surviving indexed snapshot (`alive_otransid`: root -> otransid), at the same offset. One
// LOGICAL_INO per candidate file found (and per block no candidate takes), not per block.
uint64_t move_by_extent_refs(FilesystemQueries& fs, BlockIndex& index, std::vector<IndexedBlock>& blocks,
                             const std::map<uint64_t, uint64_t>& alive_otransid);

// Whether `file` still opens. Only a file that is gone (ESTALE, ENOENT) answers false: any other
// refusal (out of fds, a seccomp filter) throws SysError, since treating it as gone would move
// or forget keepers, or drop journal entries, for good.
bool still_opens(FilesystemQueries& fs, const InodeHandle& file);

// One block whose file no longer opens, during a run: its new location among the existing
// indexed snapshots that reference its extent, or nothing.
std::optional<BlockLocation> relocate_block(FilesystemQueries& fs, BlockIndex& index, const IndexedBlock& block);

} // namespace snapdedupe
