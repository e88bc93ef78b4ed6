#include "plugin/dedupe/extent_planner.h"

#include "plugin/dedupe/deduper.h"
#include "snapshots/kernel/error.h"

#include <linux/btrfs_tree.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <optional>

namespace snapdedupe {

namespace {

// A metadata leaf holds the items of a few dozen neighbouring inodes (inode item, refs,
// xattrs, extent items: a few hundred bytes each in a 16 KiB leaf), and inode numbers of files
// written together are neighbours. So references in one snapshot to inodes that share
// inode / kInodesPerLeaf are taken to share a leaf: it is unshared (copied) once, whatever
// the number of references moved in it. An estimate, checked against measured growth.
constexpr uint64_t kInodesPerLeaf = 32;

// Pieces in extent order: how fully_covered and add_moves walk them.
constexpr auto by_extent_offset = [](const auto& a, const auto& b) { return a.extent_offset < b.extent_offset; };

} // namespace

struct ExtentPlanner::Piece {
    uint64_t extent_offset = 0; // in the extent's uncompressed data
    uint64_t length = 0;
    InodeHandle src;
    uint64_t src_offset = 0;
    BlockKey keeper_key;
    size_t block = 0;         // the duplicate block it is part of
    uint64_t file_offset = 0; // where it starts in that block's file
};

struct ExtentPlanner::Candidate {
    uint64_t disk_bytenr = 0;
    uint64_t disk_bytes = 0;
    bool onto_itself = false; // a keeper lies in this very extent
    std::vector<Piece> pieces;
    std::vector<size_t> blocks;
    std::set<InodeHandle> primary_files; // the processed snapshot's files holding it
    uint64_t duplicate_bytes = 0;
};

struct ExtentPlanner::Reference {
    InodeHandle file;
    FileExtentItem item;
    bool writable = false; // in a writable subvolume
};

// An extent that could be freed, with its references.
struct ExtentPlanner::Eligible {
    Candidate cand;
    std::vector<Reference> refs;
    bool writable = false;
    std::set<Leaf> leaves;
    std::vector<KeeperExchange> exchanges; // the keeper's extent, moving onto its copy
};

bool ExtentPlanner::read_only(uint64_t root)
{
    auto it = read_only_.find(root);
    if (it == read_only_.end())
        it = read_only_.emplace(root, fs_.subvolume_read_only(root)).first;
    return it->second;
}

bool ExtentPlanner::regular_file(uint64_t root, uint64_t inode, InodeHandle& handle)
{
    auto key = std::make_pair(root, inode);
    auto it = inodes_.find(key);
    if (it == inodes_.end()) {
        InodeHandle h{root, inode, 0};
        std::optional<InodeInfo> info = answers_ ? answers_->inode_info(root, inode) : fs_.inode_info(root, inode);
        if (info && S_ISREG(info->mode))
            h.generation = info->generation;
        it = inodes_.emplace(key, h).first;
    }
    handle = it->second;
    return handle.generation != 0;
}

std::optional<ExtentPlanner::Candidate>
ExtentPlanner::keeper_extent_of(const Candidate& c, const std::vector<DuplicateBlock>& duplicates)
{
    // The keeper's extent: what the first piece's keeper location maps.
    const Piece& first = c.pieces.front();
    std::vector<FileExtentItem> items =
        fs_.file_extent_items(first.src.root, first.src.inode, first.src_offset, first.src_offset);
    if (items.size() != 1 || items[0].type != BTRFS_FILE_EXTENT_REG || items[0].disk_bytenr == 0 ||
        items[0].disk_bytenr == c.disk_bytenr)
        return std::nullopt;
    Candidate k;
    k.disk_bytenr = items[0].disk_bytenr;
    k.disk_bytes = items[0].disk_num_bytes;
    k.blocks = c.blocks;
    for (const Piece& p : c.pieces) {
        const DuplicateBlock& d = duplicates[p.block];
        // A plain extent's block key is the disk address of the block's first byte; a
        // compressed one's is the extent's, with the block's offset in its data.
        const BlockKey& key = d.keeper.key;
        if (key.extent < k.disk_bytenr || key.extent >= k.disk_bytenr + k.disk_bytes)
            return std::nullopt; // the keepers lie in more than one extent
        Piece mirror;
        mirror.extent_offset = key.extent - k.disk_bytenr + key.extent_offset + (p.file_offset - d.block.file_offset);
        mirror.length = p.length;
        mirror.src = d.file;
        mirror.src_offset = p.file_offset;
        mirror.keeper_key = d.block.key;
        mirror.block = p.block;
        k.pieces.push_back(mirror);
        k.duplicate_bytes += p.length;
    }
    std::sort(k.pieces.begin(), k.pieces.end(), by_extent_offset);
    return k;
}

uint64_t ExtentPlanner::exchangeable_keeper(const Candidate& c, const std::vector<DuplicateBlock>& duplicates,
                                            int64_t after)
{
    // Before any question to the kernel: a keeper of an earlier run may be held by every
    // snapshot, and a backref walk over them all costs more than the exchange could save.
    for (const Piece& p : c.pieces)
        if (duplicates[p.block].keeper.id <= after)
            return 0;
    return duplicates[c.pieces.front().block].keeper.key.extent;
}

void ExtentPlanner::exchange_if_cheaper(Eligible& e, const std::vector<DuplicateBlock>& duplicates, int64_t after,
                                        const KeeperUsers& keeper_users,
                                        const std::map<uint64_t, Candidate>& candidates)
{
    if (exchangeable_keeper(e.cand, duplicates, after) == 0)
        return;
    // Counted first, at any address in the keeper's extent (the answer is the whole extent's,
    // and is used again below): most keepers are held by as many references as their copy or
    // more, and looking each one up is what costs.
    const uint64_t keeper_address = duplicates[e.cand.pieces.front().block].keeper.key.extent;
    const ExtentRefs* asked = answers_ ? answers_->keeper_references(keeper_address) : nullptr;
    ExtentRefs held = asked ? *asked : fs_.extent_references(keeper_address);
    if (!held.complete || held.refs.size() >= e.refs.size())
        return;
    std::optional<Candidate> keeper = keeper_extent_of(e.cand, duplicates);
    if (!keeper || candidates.count(keeper->disk_bytenr))
        return;
    // Another extent of the batch deduped onto this keeper would land on an extent that is
    // about to go, or keep it.
    for (auto it = keeper_users.lower_bound(keeper->disk_bytenr);
         it != keeper_users.end() && it->first < keeper->disk_bytenr + keeper->disk_bytes; ++it)
        if (it->second != e.cand.disk_bytenr)
            return;
    Eligible x;
    if (!read_references(*keeper, held, x.refs, x.writable) || !fully_covered(*keeper, x.refs) ||
        (x.writable && readonly_only_))
        return;
    x.leaves = leaves_of(x.refs);
    if (x.leaves.size() > e.leaves.size())
        return;
    // The processed snapshot's bytes are deduped once: count one reference's moves as its.
    keeper->primary_files.insert(x.refs.front().file);
    std::set<int64_t> rows;
    for (const Piece& p : keeper->pieces) {
        const DuplicateBlock& d = duplicates[p.block];
        if (rows.insert(d.keeper.id).second)
            x.exchanges.push_back({p.block, d.keeper.id, d.block.key, {d.file, d.block.file_offset}});
    }
    x.cand = std::move(*keeper);
    e = std::move(x);
}

// Maps each duplicate block onto the extents that hold its bytes in the snapshot's file.
// Blocks arrive file by file, in file order: one tree search per file.
std::map<uint64_t, ExtentPlanner::Candidate>
ExtentPlanner::collect_candidates(const std::vector<DuplicateBlock>& duplicates)
{
    std::map<uint64_t, Candidate> candidates;
    size_t first = 0;
    while (first < duplicates.size()) {
        size_t last = first;
        uint64_t from = duplicates[first].block.map_start;
        uint64_t to = 0;
        while (last < duplicates.size() && duplicates[last].file == duplicates[first].file) {
            from = std::min(from, duplicates[last].block.map_start);
            to = std::max(to, duplicates[last].block.file_offset + duplicates[last].block.length);
            ++last;
        }
        const InodeHandle file = duplicates[first].file;
        std::vector<FileExtentItem> items = fs_.file_extent_items(file.root, file.inode, from, to - 1);
        for (size_t i = first; i < last; ++i)
            add_block_pieces(duplicates[i], i, items, candidates);
        first = last;
    }
    return candidates;
}

void ExtentPlanner::add_block_pieces(const DuplicateBlock& d, size_t index, const std::vector<FileExtentItem>& items,
                                     std::map<uint64_t, Candidate>& candidates)
{
    const uint64_t b0 = d.block.file_offset;
    const uint64_t b1 = b0 + d.block.length;
    // Items are in file order; the first that can overlap ends after b0.
    auto it = std::partition_point(items.begin(), items.end(), [&](const FileExtentItem& item) {
        return item.file_offset + std::max(item.num_bytes, uint64_t{1}) <= b0;
    });
    for (; it != items.end() && it->file_offset < b1; ++it) {
        const FileExtentItem& item = *it;
        uint64_t o0 = std::max(b0, item.file_offset);
        uint64_t o1 = std::min(b1, item.file_offset + item.num_bytes);
        if (item.type != BTRFS_FILE_EXTENT_REG || item.disk_bytenr == 0 || o0 >= o1)
            continue;
        Candidate& c = candidates[item.disk_bytenr];
        c.disk_bytenr = item.disk_bytenr;
        c.disk_bytes = item.disk_num_bytes;
        if (d.primary)
            c.primary_files.insert(d.file);
        Piece p;
        p.extent_offset = item.extent_offset + (o0 - item.file_offset);
        p.length = o1 - o0;
        p.src = d.keeper.where.file;
        p.src_offset = d.keeper.where.file_offset + (o0 - b0);
        p.keeper_key = d.keeper.key;
        p.block = index;
        p.file_offset = o0;
        c.pieces.push_back(p);
        c.duplicate_bytes += p.length;
        if (c.blocks.empty() || c.blocks.back() != index)
            c.blocks.push_back(index);
        uint64_t k = d.keeper.key.extent;
        if (k >= item.disk_bytenr && k < item.disk_bytenr + std::max(item.disk_num_bytes, uint64_t{1}))
            c.onto_itself = true;
    }
}

// Every file extent item that points at the candidate's extent. False if one cannot be read
// back (a race with a writer, a non-regular file): then nobody knows the extent's fate.
bool ExtentPlanner::read_references(const Candidate& c, const ExtentRefs& found, std::vector<Reference>& refs,
                                    bool& writable)
{
    writable = false;
    if (!found.complete)
        return false; // more references than the kernel would list: the extent's fate is unknown
    for (const ExtentRef& r : found.refs) {
        try {
            Reference ref;
            if (!regular_file(r.root, r.inode, ref.file))
                return false;
            std::vector<FileExtentItem> items =
                answers_ ? answers_->file_extent_items(r.root, r.inode, r.file_offset)
                         : fs_.file_extent_items(r.root, r.inode, r.file_offset, r.file_offset);
            if (items.size() != 1 || items[0].disk_bytenr != c.disk_bytenr)
                return false;
            ref.item = items[0];
            ref.writable = !read_only(r.root);
            writable = writable || ref.writable;
            refs.push_back(ref);
        } catch (const SysError& e) {
            // A subvolume deleted but not yet cleaned up (retention ran during the run) still
            // shows in LOGICAL_INO while its tree no longer answers. Its references go with it,
            // so they need no move: the extent is freed once the others move and it is cleaned.
            if (e.err() != ENOENT && e.err() != ESTALE)
                throw;
        }
    }
    return !refs.empty();
}

std::set<ExtentPlanner::Leaf> ExtentPlanner::leaves_of(const std::vector<Reference>& refs) const
{
    std::set<Leaf> leaves;
    for (const Reference& r : refs) {
        Leaf leaf{r.file.root, r.file.inode / kInodesPerLeaf};
        if (!charged_leaves_.count(leaf))
            leaves.insert(leaf);
    }
    return leaves;
}

std::set<uint64_t> ExtentPlanner::roots_of(const std::vector<Reference>& refs) const
{
    std::set<uint64_t> roots;
    for (const Reference& r : refs)
        if (!charged_roots_.count(r.file.root))
            roots.insert(r.file.root);
    return roots;
}

uint32_t ExtentPlanner::tree_level(uint64_t root)
{
    auto it = tree_levels_.find(root);
    if (it == tree_levels_.end())
        it = tree_levels_.emplace(root, fs_.subvolume_tree_level(root)).first;
    return it->second;
}

bool ExtentPlanner::fully_covered(const Candidate& cand, const std::vector<Reference>& refs) const
{
    return std::all_of(refs.begin(), refs.end(), [&](const Reference& r) {
        uint64_t pos = r.item.extent_offset;
        const uint64_t end = r.item.extent_offset + r.item.num_bytes;
        for (const Piece& p : cand.pieces) {
            if (p.extent_offset > pos)
                break;
            // A file's last block ends at EOF, inside the extent's last sector; the rest of
            // that sector belongs to no file.
            uint64_t sector = geometry_.sectorsize;
            pos = std::max(pos, (p.extent_offset + p.length + sector - 1) / sector * sector);
            if (pos >= end)
                return true;
        }
        return pos >= end;
    });
}

void ExtentPlanner::add_moves(const Candidate& cand, const std::vector<Reference>& refs, size_t index,
                              ExtentPlan& plan) const
{
    for (const Reference& r : refs) {
        const uint64_t r0 = r.item.extent_offset;
        const uint64_t r1 = r0 + r.item.num_bytes;
        uint64_t done = r0; // pieces are in extent order; two may cover the same bytes
        for (const Piece& p : cand.pieces) {
            uint64_t x0 = std::max(done, p.extent_offset);
            uint64_t x1 = std::min(r1, p.extent_offset + p.length);
            if (x0 >= x1)
                continue;
            done = x1;
            PlannedMove m;
            m.dst = r.file;
            m.dst_offset = r.item.file_offset + (x0 - r0);
            m.src = p.src;
            m.src_offset = p.src_offset + (x0 - p.extent_offset);
            m.keeper_key = p.keeper_key;
            m.length = x1 - x0;
            m.extent = index;
            m.primary = cand.primary_files.count(r.file) > 0;
            m.writable = r.writable;
            plan.moves.push_back(m);
        }
    }
}

ReferenceAnswers ExtentPlanner::ask_ahead(const std::map<uint64_t, Candidate>& candidates,
                                          const std::vector<DuplicateBlock>& duplicates,
                                          std::optional<int64_t> exchangeable_after)
{
    std::vector<uint64_t> to_ask, keepers;
    for (const auto& [bytenr, cand] : candidates) {
        if (cand.onto_itself)
            continue;
        to_ask.push_back(bytenr);
        keepers.push_back(exchangeable_after ? exchangeable_keeper(cand, duplicates, *exchangeable_after) : 0);
    }
    return ReferenceAnswers(fs_, to_ask, keepers);
}

ExtentPlan ExtentPlanner::plan(const std::vector<DuplicateBlock>& duplicates, std::optional<int64_t> exchangeable_after)
{
    ExtentPlan plan;
    DedupeCounters& c = plan.counters;

    // First the extents that could be freed at all, with their references.
    std::map<uint64_t, Candidate> candidates = collect_candidates(duplicates);
    KeeperUsers keeper_users;
    if (exchangeable_after)
        for (const auto& [bytenr, cand] : candidates)
            for (const Piece& p : cand.pieces)
                keeper_users.emplace(p.keeper_key.extent, bytenr);
    for (auto& [bytenr, cand] : candidates)
        std::sort(cand.pieces.begin(), cand.pieces.end(), by_extent_offset);
    const ReferenceAnswers answers = ask_ahead(candidates, duplicates, exchangeable_after);
    answers_ = &answers;
    struct Forget {
        const ReferenceAnswers*& answers;
        ~Forget() { answers = nullptr; }
    } forget{answers_};
    std::vector<Eligible> eligible;
    for (auto& [bytenr, cand] : candidates) {
        Eligible e;
        if (cand.onto_itself || !read_references(cand, *answers.references(cand.disk_bytenr), e.refs, e.writable) ||
            !fully_covered(cand, e.refs)) {
            c.skipped_partial_bytes += cand.duplicate_bytes; // sharing part of an extent frees nothing
            continue;
        }
        e.leaves = leaves_of(e.refs);
        e.cand = cand; // a copy: the exchange looks up the others
        // A copy held twice would save one move at most, for a question to the kernel about
        // the keeper's extent: measured, the questions cost more than the moves saved.
        if (exchangeable_after && e.refs.size() > 2)
            exchange_if_cheaper(e, duplicates, *exchangeable_after, keeper_users, candidates);
        if (e.writable && readonly_only_) {
            c.skipped_writable_bytes += e.cand.duplicate_bytes;
            continue;
        }
        eligible.push_back(std::move(e));
    }

    // Then the metadata they cost. A leaf is unshared once however many of its references
    // move, so its cost is split among the extents referenced from it: many small files in
    // one directory share the bill instead of each being refused for the whole leaf. The
    // first change in a snapshot also unshares the nodes above its leaves, up to the root
    // (the tree's level of them), split the same way among the extents touching that tree.
    std::map<Leaf, size_t> sharing;
    std::map<uint64_t, size_t> root_sharing;
    for (const Eligible& e : eligible) {
        for (const Leaf& leaf : e.leaves)
            ++sharing[leaf];
        for (uint64_t root : roots_of(e.refs))
            ++root_sharing[root];
    }
    const uint64_t node_cost = uint64_t{geometry_.nodesize} * geometry_.copies;
    for (Eligible& e : eligible) {
        uint64_t cost = 0;
        for (const Leaf& leaf : e.leaves)
            cost += node_cost / sharing[leaf];
        std::set<uint64_t> roots = roots_of(e.refs);
        for (uint64_t root : roots)
            cost += node_cost * tree_level(root) / root_sharing[root];
        if (cost >= e.cand.disk_bytes) {
            c.skipped_cost_bytes += e.cand.duplicate_bytes;
            plan.cost_skipped.insert(plan.cost_skipped.end(), e.cand.blocks.begin(), e.cand.blocks.end());
            continue;
        }
        charged_leaves_.insert(e.leaves.begin(), e.leaves.end());
        charged_roots_.insert(roots.begin(), roots.end());
        size_t index = plan.extents.size();
        plan.extents.push_back({e.cand.disk_bytenr, e.cand.disk_bytes, e.refs.size(), cost, e.writable});
        plan.extent_blocks.push_back(e.cand.blocks);
        plan.exchanges.insert(plan.exchanges.end(), e.exchanges.begin(), e.exchanges.end());
        ++c.extents_planned;
        c.predicted_freed_bytes += e.cand.disk_bytes;
        c.predicted_metadata_bytes += cost;
        if (e.refs.size() > kMaxTargetsPerCall)
            ++c.large_fanout_extents;
        add_moves(e.cand, e.refs, index, plan);
    }
    return plan;
}

} // namespace snapdedupe
