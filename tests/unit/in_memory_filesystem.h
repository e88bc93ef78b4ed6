// A btrfs filesystem in memory, answering FilesystemQueries the way the kernel does, so the
// engine's decisions (planner, mover, batching, forgetter) are tested without root or a disk.
//
// The model holds subvolumes, inodes and their file extent items, and extents. Bytes are
// modelled, not stored: byte `o` of an extent with content `c` is the pair (c, o), so two
// extents with one content hold the same bytes at the same offsets (a copy), and ranges of
// any size cost nothing. References are not stored either: an extent's references are the file
// extent items that point into it, found by a scan, as LOGICAL_INO finds them.
//
// The dedupe call does what btrfs does: where the bytes are equal, the destination's items over
// the range are replaced by the source's (the destination now references the source's extent);
// otherwise DIFFERS. Knobs script what the kernel would do on its own: a busy root (a send is
// reading it: EAGAIN), a refused target, partial progress, a reference list too long to return.
#pragma once

#include "plugin/dedupe/filesystem_queries.h"
#include "snapshots/kernel/error.h"

#include <linux/btrfs_tree.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <functional>
#include <map>
#include <set>
#include <utility>

namespace snapdedupe::testing {

class InMemoryFilesystem : public FilesystemQueries {
public:
    // One dedupe call as the model received it.
    struct Call {
        InodeHandle src;
        uint64_t src_offset = 0;
        uint64_t length = 0;
        std::vector<std::pair<InodeHandle, uint64_t>> targets; // (file, offset)
    };
    // One prefetch or release of a range, and how many dedupe calls the model had seen then.
    struct CacheCall {
        bool release = false;
        InodeHandle file; // all zero for an fd the model never handed out
        uint64_t offset = 0;
        uint64_t length = 0;
        size_t calls_before = 0;
    };

    // --- Building the model ---

    void add_subvolume(uint64_t root, bool read_only, uint32_t tree_level = 0, std::string uuid = {})
    {
        subvolumes_[root] = {read_only, tree_level, std::move(uuid), {}};
    }
    // A new extent of `disk_bytes` whose bytes are those of `content`; returns its disk address.
    uint64_t add_extent(uint64_t disk_bytes, uint64_t content)
    {
        uint64_t bytenr = next_bytenr_;
        next_bytenr_ += (disk_bytes / kAlign + 2) * kAlign; // never adjacent
        extents_[bytenr] = {disk_bytes, content, next_generation_++};
        return bytenr;
    }
    InodeHandle add_file(uint64_t root, uint64_t inode, uint64_t size, uint32_t mode = S_IFREG | 0644)
    {
        InodeHandle h{root, inode, next_generation_++};
        subvolumes_.at(root).inodes[inode] = {h.generation, size, mode, {}};
        return h;
    }
    // File bytes [file_offset, file_offset + num_bytes) are [extent_offset, ...) of the extent.
    void map(const InodeHandle& file, uint64_t file_offset, uint64_t disk_bytenr, uint64_t extent_offset,
             uint64_t num_bytes)
    {
        const Extent& e = extents_.at(disk_bytenr);
        FileExtentItem item{file_offset, e.generation, BTRFS_FILE_EXTENT_REG, 0, disk_bytenr, e.disk_bytes,
                            extent_offset, num_bytes};
        auto& items = inode(file).items;
        items.push_back(item);
        std::sort(items.begin(), items.end(), by_offset);
    }
    // A file of `size` bytes in one new extent of content `content`.
    InodeHandle add_file_in_extent(uint64_t root, uint64_t inode, uint64_t size, uint64_t content)
    {
        InodeHandle h = add_file(root, inode, size);
        map(h, 0, add_extent(size, content), 0, size);
        return h;
    }

    // `file` as a snapshot of its subvolume into `root` holds it: same inode, same extents.
    InodeHandle snapshot_file(const InodeHandle& file, uint64_t root)
    {
        subvolumes_.at(root).inodes[file.inode] = inode(file);
        return {root, file.inode, file.generation};
    }
    // A writer replaced [offset, offset + length) of `file` with new bytes of `content`.
    void overwrite(const InodeHandle& file, uint64_t offset, uint64_t length, uint64_t content)
    {
        Inode written;
        FileExtentItem item;
        item.file_offset = offset;
        item.disk_bytenr = add_extent(length, content);
        item.generation = extents_.at(item.disk_bytenr).generation;
        item.type = BTRFS_FILE_EXTENT_REG;
        item.disk_num_bytes = item.num_bytes = length;
        written.items.push_back(item);
        remap(written, offset, inode(file), offset, length);
    }

    // --- Scripting what the kernel would do ---

    // A send is reading `root`: dedupes into it fail with EAGAIN.
    void set_busy(uint64_t root, bool busy = true) { subvolumes_.at(root).busy = busy; }
    // Dedupes into `file` whose range starts at `offset` (any offset if omitted) fail with `err`.
    void fail_dedupe(const InodeHandle& file, int err, std::optional<uint64_t> offset = std::nullopt)
    {
        failures_.push_back({file, offset, err});
    }
    // Each dedupe call shares at most `bytes` into `file` (0: no progress at all).
    void limit_dedupe(const InodeHandle& file, uint64_t bytes) { limits_[file] = bytes; }
    // Called as each dedupe call starts, before the model changes: what had the caller done by then?
    void before_each_dedupe(std::function<void()> hook) { before_dedupe_ = std::move(hook); }
    // prefetch() finds the ranges of `file` in the page cache already (nothing read).
    void cached_already(const InodeHandle& file) { cached_.insert(file); }
    // LOGICAL_INO lists only part of the extent's references.
    void set_incomplete(uint64_t disk_bytenr) { incomplete_.insert(disk_bytenr); }
    // Deleted, not yet cleaned up: still listed by LOGICAL_INO, its tree answers ENOENT.
    void start_deleting(uint64_t root) { subvolumes_.at(root).state = State::deleting; }
    // Gone: no longer listed, opens fail (ESTALE), it no longer exists.
    void delete_subvolume(uint64_t root) { subvolumes_.at(root).state = State::deleted; }

    // --- Reading the model ---

    const std::vector<Call>& calls() const { return calls_; }
    const std::vector<CacheCall>& cache_calls() const { return cache_calls_; }
    const std::vector<FileExtentItem>& items_of(const InodeHandle& file) { return inode(file).items; }
    // The extent the file's byte at `offset` is in; 0 in a hole.
    uint64_t extent_at(const InodeHandle& file, uint64_t offset)
    {
        const FileExtentItem* item = item_at(inode(file), offset);
        return item ? item->disk_bytenr : 0;
    }
    // How often open_file opened the file (each open by handle costs two opens and a stat).
    size_t opens(const InodeHandle& file) const { return opens_.count(file) ? opens_.at(file) : 0; }
    size_t reference_count(uint64_t disk_bytenr) { return references_to(disk_bytenr).refs.size(); }
    // The questions that cost the kernel most when an extent has thousands of references, as
    // the code under test asked them (LOGICAL_INO, inode lookups).
    size_t reference_lookups = 0, inode_lookups = 0;
    // dedupable_blocks calls: each an open by handle and a tree search on the kernel.
    size_t block_lookups = 0;
    // The block [offset, offset + length) of `file` as the run keys it (index/changed_blocks.h).
    std::optional<DataBlock> block_at(const InodeHandle& file, uint64_t offset, uint64_t length)
    {
        const Inode& in = inode(file);
        const FileExtentItem* item = item_at(in, offset);
        if (!item || !fully_mapped(in, offset, offset + length))
            return std::nullopt;
        DataBlock b;
        b.file_offset = offset;
        b.length = length;
        b.map_start = item->file_offset;
        b.key = {item->disk_bytenr + item->extent_offset + (offset - item->file_offset), 0, item->generation};
        b.extent_address = b.key.extent;
        return b;
    }

    // --- FilesystemQueries ---

    std::vector<FileExtentItem> file_extent_items(uint64_t root, uint64_t inode_number, uint64_t min_offset,
                                                  uint64_t max_offset) override
    {
        const Subvolume& s = answering(root);
        auto it = s.inodes.find(inode_number);
        std::vector<FileExtentItem> out;
        if (it != s.inodes.end())
            for (const FileExtentItem& item : it->second.items)
                if (item.file_offset >= min_offset && item.file_offset <= max_offset)
                    out.push_back(item);
        return out;
    }
    ExtentRefs extent_references(uint64_t address) override
    {
        ++reference_lookups;
        return references_to(address);
    }
    std::optional<InodeInfo> inode_info(uint64_t root, uint64_t inode_number) override
    {
        ++inode_lookups;
        const Subvolume& s = answering(root);
        auto it = s.inodes.find(inode_number);
        if (it == s.inodes.end())
            return std::nullopt;
        return InodeInfo{it->second.generation, it->second.size, it->second.mode};
    }
    // extent_references, uncounted.
    ExtentRefs references_to(uint64_t address) const
    {
        ExtentRefs out;
        for (const auto& [root, s] : subvolumes_) {
            if (s.state == State::deleted)
                continue;
            for (const auto& [number, in] : s.inodes)
                for (const FileExtentItem& item : in.items)
                    if (address >= item.disk_bytenr && address < item.disk_bytenr + item.disk_num_bytes)
                        out.refs.push_back({root, number, item.file_offset});
        }
        auto first = extents_.upper_bound(address);
        if (first != extents_.begin() && incomplete_.count(std::prev(first)->first) && !out.refs.empty()) {
            out.refs.pop_back(); // the list the kernel could not finish
            out.complete = false;
        }
        return out;
    }
    bool subvolume_read_only(uint64_t root) override { return answering(root).read_only; }
    uint32_t subvolume_tree_level(uint64_t root) override { return answering(root).tree_level; }
    bool subvolume_exists(uint64_t root, const std::string& uuid) override
    {
        auto it = subvolumes_.find(root);
        return it != subvolumes_.end() && it->second.state == State::live && it->second.uuid == uuid;
    }
    OpenResult open_file(const InodeHandle& file) override
    {
        if (int err = open_error(file))
            return {UniqueFd(), err};
        UniqueFd fd(::memfd_create("in-memory-file", MFD_CLOEXEC));
        if (!fd)
            throw SysError("memfd_create for", "the in-memory filesystem", errno);
        open_files_[fd.get()] = file; // a reused fd number is simply registered again
        ++opens_[file];
        return {std::move(fd), 0};
    }
    std::optional<std::vector<DataBlock>> dedupable_blocks(const InodeHandle& file,
                                                            const std::vector<ByteRange>& ranges) override
    {
        ++block_lookups;
        if (open_error(file))
            return std::nullopt;
        const uint64_t size = inode(file).size;
        std::set<uint64_t> starts; // each range widened to kBlockSize boundaries, clipped to EOF
        for (const ByteRange& r : ranges) {
            const uint64_t end = std::min(size, r.offset + r.length);
            for (uint64_t b = r.offset / kBlockSize * kBlockSize; b < end; b += kBlockSize)
                starts.insert(b);
        }
        std::vector<DataBlock> out;
        for (uint64_t start : starts)
            if (std::optional<DataBlock> b = block_at(file, start, std::min(size, start + kBlockSize) - start))
                out.push_back(*b);
        return out;
    }
    std::vector<DedupeCallResult> dedupe_call(int src_fd, uint64_t src_offset, uint64_t length,
                                              const std::vector<DedupeTarget>& targets) override
    {
        if (before_dedupe_)
            before_dedupe_();
        std::vector<DedupeCallResult> results(targets.size());
        auto src = open_files_.find(src_fd);
        if (src == open_files_.end()) { // the kernel refuses the whole call
            for (DedupeCallResult& r : results)
                r.error = EBADF;
            return results;
        }
        Call call{src->second, src_offset, length, {}};
        for (size_t i = 0; i < targets.size(); ++i) {
            auto dst = open_files_.find(targets[i].fd);
            if (dst == open_files_.end()) {
                results[i].error = EBADF;
                continue;
            }
            call.targets.push_back({dst->second, targets[i].offset});
            results[i] = dedupe_one(src->second, src_offset, length, dst->second, targets[i].offset);
        }
        calls_.push_back(std::move(call));
        return results;
    }
    // The page cache is not modelled: the calls are recorded, and what they would find is scripted.
    bool prefetch(int fd, uint64_t offset, uint64_t length) override
    {
        InodeHandle file = open_files_.count(fd) ? open_files_.at(fd) : InodeHandle{};
        cache_calls_.push_back({false, file, offset, length, calls_.size()});
        return !cached_.count(file);
    }
    void release(int fd, uint64_t offset, uint64_t length) override
    {
        InodeHandle file = open_files_.count(fd) ? open_files_.at(fd) : InodeHandle{};
        cache_calls_.push_back({true, file, offset, length, calls_.size()});
    }

private:
    static constexpr uint64_t kAlign = 1024 * 1024;
    enum class State { live, deleting, deleted };
    struct Inode {
        uint64_t generation = 0;
        uint64_t size = 0;
        uint32_t mode = 0;
        std::vector<FileExtentItem> items; // in file order
    };
    struct Subvolume {
        bool read_only = true;
        uint32_t tree_level = 0;
        std::string uuid;
        std::map<uint64_t, Inode> inodes;
        bool busy = false;
        State state = State::live;
    };
    struct Extent {
        uint64_t disk_bytes = 0;
        uint64_t content = 0;
        uint64_t generation = 0;
    };
    struct Failure {
        InodeHandle file;
        std::optional<uint64_t> offset; // nothing: any offset
        int err = 0;
    };

    static bool by_offset(const FileExtentItem& a, const FileExtentItem& b) { return a.file_offset < b.file_offset; }

    Inode& inode(const InodeHandle& file) { return subvolumes_.at(file.root).inodes.at(file.inode); }
    // A subvolume whose tree answers: a deleted one's does not (ENOENT), as on the kernel.
    const Subvolume& answering(uint64_t root) const
    {
        auto it = subvolumes_.find(root);
        if (it == subvolumes_.end() || it->second.state != State::live)
            throw SysError("searching the tree of root", std::to_string(root), ENOENT);
        return it->second;
    }
    int open_error(const InodeHandle& file) const
    {
        auto s = subvolumes_.find(file.root);
        if (s == subvolumes_.end() || s->second.state != State::live)
            return ESTALE;
        auto in = s->second.inodes.find(file.inode);
        if (in == s->second.inodes.end() || in->second.generation != file.generation)
            return ESTALE;
        return S_ISREG(in->second.mode) ? 0 : EINVAL;
    }
    static const FileExtentItem* item_at(const Inode& in, uint64_t offset)
    {
        for (const FileExtentItem& item : in.items)
            if (item.disk_bytenr != 0 && offset >= item.file_offset && offset < item.file_offset + item.num_bytes)
                return &item;
        return nullptr;
    }
    static bool fully_mapped(const Inode& in, uint64_t begin, uint64_t end)
    {
        for (uint64_t pos = begin; pos < end;) {
            const FileExtentItem* item = item_at(in, pos);
            if (!item)
                return false;
            pos = item->file_offset + item->num_bytes;
        }
        return true;
    }
    // Whether [a0, a0 + length) of `a` holds the same bytes as [b0, ...) of `b`, holes unequal.
    bool same_bytes(const Inode& a, uint64_t a0, const Inode& b, uint64_t b0, uint64_t length) const
    {
        for (uint64_t pos = 0; pos < length;) {
            const FileExtentItem* x = item_at(a, a0 + pos);
            const FileExtentItem* y = item_at(b, b0 + pos);
            if (!x || !y)
                return false;
            uint64_t xo = x->extent_offset + (a0 + pos - x->file_offset);
            uint64_t yo = y->extent_offset + (b0 + pos - y->file_offset);
            if (extents_.at(x->disk_bytenr).content != extents_.at(y->disk_bytenr).content || xo != yo)
                return false;
            pos += std::min(x->file_offset + x->num_bytes - (a0 + pos), y->file_offset + y->num_bytes - (b0 + pos));
        }
        return true;
    }
    // The destination's items over [d0, d0 + length) become the source's over [s0, ...).
    void remap(const Inode& src, uint64_t s0, Inode& dst, uint64_t d0, uint64_t length)
    {
        std::vector<FileExtentItem> out;
        for (const FileExtentItem& item : dst.items) {
            const uint64_t end = item.file_offset + item.num_bytes;
            if (end <= d0 || item.file_offset >= d0 + length) {
                out.push_back(item);
                continue;
            }
            if (item.file_offset < d0) { // the part before the range stays
                FileExtentItem left = item;
                left.num_bytes = d0 - item.file_offset;
                out.push_back(left);
            }
            if (end > d0 + length) { // and the part after it
                FileExtentItem right = item;
                right.file_offset = d0 + length;
                right.extent_offset += d0 + length - item.file_offset;
                right.num_bytes = end - (d0 + length);
                out.push_back(right);
            }
        }
        for (const FileExtentItem& item : src.items) {
            uint64_t a = std::max(s0, item.file_offset);
            uint64_t b = std::min(s0 + length, item.file_offset + item.num_bytes);
            if (a >= b)
                continue;
            FileExtentItem moved = item;
            moved.file_offset = d0 + (a - s0);
            moved.extent_offset = item.extent_offset + (a - item.file_offset);
            moved.num_bytes = b - a;
            out.push_back(moved);
        }
        std::sort(out.begin(), out.end(), by_offset);
        dst.items = std::move(out);
    }
    DedupeCallResult dedupe_one(const InodeHandle& src, uint64_t s0, uint64_t length, const InodeHandle& dst,
                                uint64_t d0)
    {
        DedupeCallResult r;
        for (const Failure& f : failures_)
            if (f.file == dst && (!f.offset || *f.offset == d0))
                r.error = f.err;
        if (r.error == 0 && subvolumes_.at(dst.root).busy)
            r.error = EAGAIN;
        if (r.error != 0)
            return r;
        auto limit = limits_.find(dst);
        uint64_t len = limit == limits_.end() ? length : std::min(length, limit->second);
        if (len == 0)
            return r; // no progress, no error: the kernel's way of refusing a range
        if (!same_bytes(inode(src), s0, inode(dst), d0, len)) {
            r.differs = true;
            return r;
        }
        remap(inode(src), s0, inode(dst), d0, len);
        r.bytes_deduped = len;
        return r;
    }

    std::map<uint64_t, Subvolume> subvolumes_;
    std::map<uint64_t, Extent> extents_; // by disk address
    uint64_t next_bytenr_ = 1024 * 1024 * 1024;
    uint64_t next_generation_ = 100;
    std::map<int, InodeHandle> open_files_; // fds handed out by open_file
    std::map<InodeHandle, size_t> opens_;
    std::vector<Failure> failures_;
    std::map<InodeHandle, uint64_t> limits_;
    std::set<uint64_t> incomplete_;
    std::vector<Call> calls_;
    std::function<void()> before_dedupe_;
    std::vector<CacheCall> cache_calls_;
    std::set<InodeHandle> cached_;
};

} // namespace snapdedupe::testing
