// The index: what we know about the filesystem's data, keyed by physical location.
//
// A block is a file-offset-aligned run of up to kBlockSize bytes that lies in one physical
// extent. Its key is where its bytes live on disk, so a block that is already shared (a
// reflink, an unchanged file in the next snapshot) has a key the index knows and is never
// read again. Its fingerprint finds the same bytes elsewhere; its location says where to open
// them.
#pragma once

#include "index/sqlite_db.h"
#include "snapshots/kernel/error.h"
#include "snapshots/kernel/file_handle.h"

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

namespace snapdedupe {

// Why 128 KiB: see README ("Hash granularity").
constexpr uint64_t kBlockSize = 128 * 1024;

struct BlockKey {
    // The disk (btrfs logical) address of the block's first byte. For a compressed extent,
    // where bytes have no address of their own, the extent's address ...
    uint64_t extent = 0;
    // ... and the block's offset in the extent's uncompressed data; 0 for plain extents.
    uint64_t extent_offset = 0;
    // The transaction that wrote the extent, from the file extent item (reflinks and dedupes
    // keep it). A disk address that is freed and reused for new data gets a new one, so a
    // stale key is recognised instead of hiding the new data.
    uint64_t generation = 0;
    bool operator==(const BlockKey&) const = default;
};

// One place the block's bytes can be opened: `file` at `file_offset`. Opened by file
// handle, never by path.
struct BlockLocation {
    InodeHandle file;
    uint64_t file_offset = 0;
};

// What finds a block's copies: its fingerprint (index/fingerprint.h) and length, and its
// kind: the kernel refuses to share between a nodatasum file and a checksummed one (EINVAL),
// so the two kinds are never offered to each other.
struct BlockContent {
    uint64_t fingerprint = 0;
    uint64_t length = 0;
    bool nodatasum = false;
};

struct IndexedBlock {
    int64_t id = 0; // insertion order: the oldest copy of some bytes is the keeper
    BlockKey key;
    uint64_t length = 0;
    uint64_t fingerprint = 0;
    bool nodatasum = false;
    BlockLocation where;

    BlockContent content() const { return {fingerprint, length, nodatasum}; }
};

struct ProcessedSnapshot {
    std::string uuid;
    uint64_t root_id = 0;
    std::string lineage;
    uint64_t otransid = 0;
    std::string path;
    uint64_t changed_bytes = 0;
};

// The intent journal: a move of a reference onto its keeper, written down (and committed)
// before the first reference of its extent moves, and removed only once it has moved, or its
// file was found gone, or its bytes different. A run killed in between, a busy root (EAGAIN),
// or an error leaves it here, and the next run (or the end of this one) finishes it.
struct DeferredMove {
    BlockLocation where; // the reference
    uint64_t length = 0;
    BlockLocation keeper;
    BlockKey keeper_key; // where the keeper's bytes are on disk (extent and offset; no generation)
    int error = 0;       // why it is still here: 0 not settled yet, EAGAIN busy, else the errno
    bool primary = true; // the processed snapshot's own reference: its bytes count as deduped
};

// How the journal's table keys a move: one row per reference, its root, inode and offset (not
// the inode's generation).
using DeferredKey = std::tuple<uint64_t, uint64_t, uint64_t>;
inline DeferredKey deferred_key(const BlockLocation& where)
{
    return {where.file.root, where.file.inode, where.file_offset};
}

class BlockIndex {
public:
    // `db` holds the schema: open it with open_index (index/index_file.h).
    explicit BlockIndex(Database& db);

    bool knows_snapshot(const std::string& uuid);
    // True if a block with this key (generation included) is indexed; a row at the same address
    // from an older generation is stale: it is dropped and the answer is false.
    bool knows_block(const BlockKey& key);
    // Indexed blocks with this content (fingerprint, length, kind) not at `key`, oldest first.
    std::vector<IndexedBlock> find_copies(const BlockContent& content, const BlockKey& key, int limit = 4);
    void add_block(const BlockKey& key, const BlockContent& content, const BlockLocation& where);
    // A location that no longer opens (its snapshot was deleted): stop offering it.
    void forget_block(int64_t id);
    void add_snapshot(const ProcessedSnapshot& snapshot);
    // Records (or updates) the move of the reference at `move.where`.
    void add_deferred(const DeferredMove& move);
    // The move of the reference at `where` is settled: it leaves the journal.
    void settle_deferred(const BlockLocation& where);
    // Every move in the journal. They stay there until settled.
    std::vector<DeferredMove> deferred();
    // The copy at `key`, `where` takes over the row `id`, and with it its id and its place as
    // keeper: the planner found the copy cheaper to keep (plugin/dedupe/extent_planner.h).
    void exchange_block(int64_t id, const BlockKey& key, const BlockLocation& where);
    // The highest row id so far (0: none): rows above it were added since.
    int64_t last_block_id();
    // The indexed block at this disk address (any generation), if any: where a keeper is now.
    std::optional<IndexedBlock> block_at(const BlockKey& key);

    // Forgetting deleted snapshots (plugin/snapshot_forgetter.h decides which and where their
    // blocks still live).
    // Every processed snapshot, oldest first; changed_paths left empty.
    std::vector<ProcessedSnapshot> snapshots();
    // The blocks whose location is in subvolume `root` (a scan: blocks has no index by root).
    std::vector<IndexedBlock> blocks_in_root(uint64_t root);
    // The block's bytes also live here: keep its id (and so its place as keeper), move its location.
    void move_block(int64_t id, const BlockLocation& where);
    // Forgets the snapshot whose subvolume id is `root`: its row, and the blocks and deferred
    // duplicates still located in it. Returns how many blocks were forgotten.
    int64_t forget_snapshot(uint64_t root);

private:
    Database& db_;
    Statement knows_snapshot_;
    Statement knows_block_;
    Statement find_copies_;
    Statement add_block_;
    Statement forget_block_;
};

} // namespace snapdedupe
