// Planning per extent: which duplicate extents to free, and every reference that must move.
//
// btrfs frees an extent only when no file extent item references any part of it. So the
// unit of work is the extent, not the block: all its references move onto the keeper, or
// none does. An extent that also holds bytes with no other copy can never be freed, and an
// extent whose references sit in many snapshots can cost more metadata to move (each moved
// reference unshares the metadata leaf holding it, in that snapshot) than it frees.
#pragma once

#include "index/changed_blocks.h"
#include "index/block_index.h"
#include "plugin/dedupe/filesystem_queries.h"
#include "plugin/dedupe/reference_answers.h"
#include "plugin/run_report.h"
#include "snapshots/kernel/space_info.h"

#include <map>
#include <optional>
#include <set>
#include <tuple>
#include <utility>
#include <vector>

namespace snapdedupe {

// A block of the snapshot being processed whose bytes the index already holds elsewhere.
struct DuplicateBlock {
    InodeHandle file;
    DataBlock block;
    uint64_t fingerprint = 0; // of its bytes (index/fingerprint.h)
    IndexedBlock keeper; // the oldest indexed copy, known to open
    // Its moves count as deduped bytes: false for a journal entry of another snapshot's
    // reference, replayed only to reach its extent.
    bool primary = true;
};

// One file range to share with the keeper.
struct PlannedMove {
    InodeHandle dst;
    uint64_t dst_offset = 0;
    InodeHandle src;
    uint64_t src_offset = 0;
    BlockKey keeper_key; // where the keeper's bytes are on disk
    uint64_t length = 0;
    size_t extent = 0;     // index into ExtentPlan::extents and ExtentPlan::extent_blocks
    bool primary = false;  // the processed snapshot's own reference
    bool writable = false; // in a writable subvolume: moved only after all read-only ones
};

// A duplicate block that becomes the keeper of its bytes: the copy at `key`, `where` takes over
// the keeper's row `keeper_id` (BlockIndex::exchange_block), and the keeper's extent moves onto it.
struct KeeperExchange {
    size_t duplicate = 0; // index into the planned duplicates
    int64_t keeper_id = 0;
    BlockKey key;
    BlockLocation where;
};

struct ExtentPlan {
    std::vector<PlannedExtent> extents;             // each extent to free (plugin/run_report.h)
    std::vector<std::vector<size_t>> extent_blocks; // per extent: the duplicate blocks with bytes in it
    std::vector<PlannedMove> moves;
    std::vector<KeeperExchange> exchanges; // to make in the index before the first move
    // The duplicate blocks of the extents skipped for cost (index into the planned duplicates):
    // a leaf that a later move unshares anyway makes them cheap (SnapshotPass::second_look).
    std::vector<size_t> cost_skipped;
    DedupeCounters counters; // skips and predictions
};

class ExtentPlanner {
public:
    // `fs` answers the planner's questions and must outlive it.
    // `readonly_only`: leave alone every extent a writable subvolume references.
    ExtentPlanner(FilesystemQueries& fs, MetadataGeometry geometry, bool readonly_only)
        : fs_(fs), geometry_(geometry), readonly_only_(readonly_only)
    {
    }

    // `exchangeable_after`: keepers in rows above this id (indexed during this run) may be
    // exchanged for their copy when moving the keeper's extent onto the copy costs less than the
    // other way round: fewer references, no more metadata leaves. Oldest first is the cheaper
    // choice for a copy that stays (the newer copy is held by fewer snapshots), not for an
    // identical reinstall, whose old copy leaves the later snapshots. Rows of earlier runs are
    // not, so a nightly run never asks the kernel about a keeper held by every snapshot.
    ExtentPlan plan(const std::vector<DuplicateBlock>& duplicates,
                    std::optional<int64_t> exchangeable_after = std::nullopt);

private:
    struct Piece;     // part of an extent that a duplicate block covers
    struct Candidate; // an extent under consideration
    struct Reference; // one file extent item that points at a candidate
    struct Eligible;  // a candidate that could be freed, with its references
    // Keeper addresses (a block key's extent) -> the candidates with pieces deduped onto them.
    using KeeperUsers = std::multimap<uint64_t, uint64_t>;

    std::map<uint64_t, Candidate> collect_candidates(const std::vector<DuplicateBlock>& duplicates);
    void add_block_pieces(const DuplicateBlock& d, size_t index, const std::vector<FileExtentItem>& items,
                          std::map<uint64_t, Candidate>& candidates);
    // `found`: what LOGICAL_INO answered for the extent.
    bool read_references(const Candidate& c, const ExtentRefs& found, std::vector<Reference>& refs, bool& writable);
    // The keeper's side of `c`: its extent, with `c`'s copy as the keeper of every byte, if all
    // of `c`'s pieces have their keepers in one extent.
    std::optional<Candidate> keeper_extent_of(const Candidate& c, const std::vector<DuplicateBlock>& duplicates);
    // What plan() will ask the kernel about each candidate (its pieces sorted), asked now on
    // the deduping threads (plugin/dedupe/reference_answers.h).
    ReferenceAnswers ask_ahead(const std::map<uint64_t, Candidate>& candidates,
                               const std::vector<DuplicateBlock>& duplicates,
                               std::optional<int64_t> exchangeable_after);
    // The address the exchange asks about (any in the keeper's extent), if every piece's keeper
    // was indexed after row `after`; else 0: no exchange.
    static uint64_t exchangeable_keeper(const Candidate& c, const std::vector<DuplicateBlock>& duplicates,
                                        int64_t after);
    // Makes `e` its keeper's extent instead, moving onto `e`'s copy, if that costs less.
    void exchange_if_cheaper(Eligible& e, const std::vector<DuplicateBlock>& duplicates, int64_t after,
                             const KeeperUsers& keeper_users, const std::map<uint64_t, Candidate>& candidates);
    bool read_only(uint64_t root);
    bool regular_file(uint64_t root, uint64_t inode, InodeHandle& handle);
    // Every reference's bytes have a copy to move onto.
    bool fully_covered(const Candidate& c, const std::vector<Reference>& refs) const;
    void add_moves(const Candidate& c, const std::vector<Reference>& refs, size_t index, ExtentPlan& plan) const;

    // A metadata leaf, guessed: (root, inode / kInodesPerLeaf).
    using Leaf = std::pair<uint64_t, uint64_t>;
    // The leaves moving these references would unshare, less those already unshared.
    std::set<Leaf> leaves_of(const std::vector<Reference>& refs) const;
    // The subvolumes these references are in whose upper tree nodes are still shared.
    std::set<uint64_t> roots_of(const std::vector<Reference>& refs) const;
    uint32_t tree_level(uint64_t root);

    FilesystemQueries& fs_;
    const ReferenceAnswers* answers_ = nullptr; // the batch's, asked ahead; set during plan()
    MetadataGeometry geometry_;
    bool readonly_only_;
    std::map<uint64_t, bool> read_only_;
    std::map<std::pair<uint64_t, uint64_t>, InodeHandle> inodes_; // generation 0: not a regular file
    std::set<Leaf> charged_leaves_;    // leaves this run has already unshared
    std::set<uint64_t> charged_roots_; // trees whose path to the root this run has unshared
    std::map<uint64_t, uint32_t> tree_levels_;
};

} // namespace snapdedupe
