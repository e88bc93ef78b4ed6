#include "snapshots/kernel/tree_search.h"

#include "snapshots/kernel/error.h"

#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>

namespace snapdedupe {

namespace {

template <typename T>
T read_le(const uint8_t* p)
{
    T v;
    std::memcpy(&v, p, sizeof v); // x86-64 and every btrfs host we target are little-endian
    return v;
}

// The key after (objectid, type, offset) in the kernel's order; false past the last key.
bool advance(TreeKeyRange& r, uint64_t objectid, uint32_t type, uint64_t offset)
{
    r.min_objectid = objectid;
    r.min_type = type;
    r.min_offset = offset;
    if (offset < ~0ULL) {
        r.min_offset = offset + 1;
        return true;
    }
    r.min_offset = 0;
    if (type < 0xff) {
        r.min_type = type + 1;
        return true;
    }
    r.min_type = 0;
    if (objectid < ~0ULL) {
        r.min_objectid = objectid + 1;
        return true;
    }
    return false;
}

bool past_end(const TreeKeyRange& r)
{
    if (r.min_objectid != r.max_objectid)
        return r.min_objectid > r.max_objectid;
    if (r.min_type != r.max_type)
        return r.min_type > r.max_type;
    return r.min_offset > r.max_offset;
}

} // namespace

TreeSearch::TreeSearch(const LabeledFd& fd, const TreeKeyRange& range, size_t buffer_bytes)
    : fd_(fd), range_(range),
      storage_((sizeof(btrfs_ioctl_search_args_v2) + buffer_bytes) / sizeof(uint64_t) + 1),
      buffer_bytes_(buffer_bytes)
{
}

bool TreeSearch::fill()
{
    auto* args = reinterpret_cast<btrfs_ioctl_search_args_v2*>(storage_.data());
    btrfs_ioctl_search_key& key = args->key;
    key = {};
    key.tree_id = range_.tree;
    key.min_objectid = range_.min_objectid;
    key.max_objectid = range_.max_objectid;
    key.min_type = range_.min_type;
    key.max_type = range_.max_type;
    key.min_offset = range_.min_offset;
    key.max_offset = range_.max_offset;
    key.max_transid = ~0ULL;
    key.nr_items = ~0U;
    args->buf_size = buffer_bytes_;
    if (::ioctl(fd_.get(), BTRFS_IOC_TREE_SEARCH_V2, args) != 0) {
        const int err = errno;
        // The next item alone does not fit: the kernel says how much it needs. Grow and ask again.
        if (err == EOVERFLOW && args->buf_size > buffer_bytes_) {
            buffer_bytes_ = args->buf_size;
            storage_.assign((sizeof(btrfs_ioctl_search_args_v2) + buffer_bytes_) / sizeof(uint64_t) + 1, 0);
            return fill();
        }
        throw SysError("TREE_SEARCH in tree " + std::to_string(range_.tree) + " of", fd_.label(), err);
    }
    items_left_ = key.nr_items;
    pos_ = 0;
    return items_left_ > 0;
}

bool TreeSearch::next(TreeItem& out)
{
    if (items_left_ == 0 && (done_ || past_end(range_) || !fill())) {
        done_ = true;
        return false;
    }
    auto* args = reinterpret_cast<btrfs_ioctl_search_args_v2*>(storage_.data());
    const uint8_t* p = reinterpret_cast<const uint8_t*>(args->buf) + pos_;
    btrfs_ioctl_search_header hdr;
    std::memcpy(&hdr, p, sizeof hdr);
    pos_ += sizeof hdr + hdr.len;
    --items_left_;
    // The next search starts after the last key returned (keys compare as a whole: the
    // kernel returns every key between the range's min and max).
    if (items_left_ == 0 && !advance(range_, hdr.objectid, hdr.type, hdr.offset))
        done_ = true;
    out.objectid = hdr.objectid;
    out.type = hdr.type;
    out.offset = hdr.offset;
    out.transid = hdr.transid;
    out.data = std::span<const uint8_t>(p + sizeof hdr, hdr.len);
    return true;
}

std::optional<FileExtentItem> decode_file_extent(const TreeItem& item)
{
    const uint8_t* p = item.data.data();
    if (item.type != BTRFS_EXTENT_DATA_KEY || item.data.size() < offsetof(btrfs_file_extent_item, disk_bytenr))
        return std::nullopt;
    FileExtentItem e;
    e.file_offset = item.offset;
    e.generation = read_le<uint64_t>(p + offsetof(btrfs_file_extent_item, generation));
    e.type = p[offsetof(btrfs_file_extent_item, type)];
    e.compression = p[offsetof(btrfs_file_extent_item, compression)];
    if (e.type != BTRFS_FILE_EXTENT_INLINE && item.data.size() >= sizeof(btrfs_file_extent_item)) {
        e.disk_bytenr = read_le<uint64_t>(p + offsetof(btrfs_file_extent_item, disk_bytenr));
        e.disk_num_bytes = read_le<uint64_t>(p + offsetof(btrfs_file_extent_item, disk_num_bytes));
        e.extent_offset = read_le<uint64_t>(p + offsetof(btrfs_file_extent_item, offset));
        e.num_bytes = read_le<uint64_t>(p + offsetof(btrfs_file_extent_item, num_bytes));
    }
    return e;
}

std::optional<InodeInfo> decode_inode(const TreeItem& item)
{
    const uint8_t* p = item.data.data();
    if (item.type != BTRFS_INODE_ITEM_KEY || item.data.size() < sizeof(btrfs_inode_item))
        return std::nullopt;
    InodeInfo info;
    info.generation = read_le<uint64_t>(p + offsetof(btrfs_inode_item, generation));
    info.size = read_le<uint64_t>(p + offsetof(btrfs_inode_item, size));
    info.mode = read_le<uint32_t>(p + offsetof(btrfs_inode_item, mode));
    info.flags = read_le<uint64_t>(p + offsetof(btrfs_inode_item, flags));
    return info;
}

std::optional<uint8_t> decode_root_level(const TreeItem& item)
{
    if (item.type != BTRFS_ROOT_ITEM_KEY || item.data.size() <= offsetof(btrfs_root_item, level))
        return std::nullopt;
    return item.data[offsetof(btrfs_root_item, level)];
}

std::optional<RootRef> decode_root_ref(const TreeItem& item)
{
    const uint8_t* p = item.data.data();
    if (item.type != BTRFS_ROOT_REF_KEY || item.data.size() < sizeof(btrfs_root_ref))
        return std::nullopt;
    const size_t name_len = read_le<uint16_t>(p + offsetof(btrfs_root_ref, name_len));
    if (item.data.size() < sizeof(btrfs_root_ref) + name_len)
        return std::nullopt;
    RootRef ref;
    ref.dir_inode = read_le<uint64_t>(p + offsetof(btrfs_root_ref, dirid));
    ref.name.assign(reinterpret_cast<const char*>(p) + sizeof(btrfs_root_ref), name_len);
    return ref;
}

std::vector<FileExtentItem> file_extent_items(const LabeledFd& fd, uint64_t root, uint64_t inode,
                                              uint64_t min_offset, uint64_t max_offset)
{
    TreeKeyRange range{root, inode, inode, BTRFS_EXTENT_DATA_KEY, BTRFS_EXTENT_DATA_KEY, min_offset, max_offset};
    std::vector<FileExtentItem> items;
    TreeSearch search(fd, range);
    TreeItem item;
    while (search.next(item)) {
        std::optional<FileExtentItem> e = item.objectid == inode ? decode_file_extent(item) : std::nullopt;
        if (!e)
            continue;
        items.push_back(*e);
        // A file's extent items never overlap, so one that reaches past max_offset is the last
        // that can start in the range. Asking on would cost another search that finds nothing:
        // one in every three searches of a full run was that.
        if (e->num_bytes > 0 && e->file_offset + e->num_bytes > max_offset)
            break;
    }
    return items;
}

std::optional<InodeInfo> read_inode(const LabeledFd& fd, uint64_t root, uint64_t inode)
{
    TreeKeyRange range{root, inode, inode, BTRFS_INODE_ITEM_KEY, BTRFS_INODE_ITEM_KEY, 0, ~0ULL};
    TreeSearch search(fd, range, 4096);
    TreeItem item;
    if (!search.next(item) || item.objectid != inode)
        return std::nullopt;
    return decode_inode(item);
}

uint32_t subvolume_tree_level(const LabeledFd& fd, uint64_t root)
{
    TreeKeyRange range{BTRFS_ROOT_TREE_OBJECTID, root, root, BTRFS_ROOT_ITEM_KEY, BTRFS_ROOT_ITEM_KEY, 0, ~0ULL};
    TreeSearch search(fd, range, 4096);
    TreeItem item;
    if (!search.next(item))
        return 1;
    return decode_root_level(item).value_or(1);
}

} // namespace snapdedupe
