#include "plugin/dedupe/reference_answers.h"

#include "plugin/dedupe/ordered_workers.h"

namespace snapdedupe {

namespace {

template <typename T, typename F>
void answer(T& slot, F&& question)
{
    try {
        slot.value = question();
    } catch (...) {
        slot.error = std::current_exception();
    }
}

} // namespace

template <typename T>
const T& ReferenceAnswers::Answer<T>::get() const
{
    if (error)
        std::rethrow_exception(error);
    return value;
}

ReferenceAnswers::ReferenceAnswers(FilesystemQueries& fs, const std::vector<uint64_t>& extents,
                                   const std::vector<uint64_t>& keepers)
    : fs_(fs)
{
    std::vector<Answer<ExtentRefs>*> slots;
    for (uint64_t bytenr : extents)
        slots.push_back(&extents_[bytenr]); // made here: the threads only fill them
    run_in_order(extents.size(), fs.dedupe_threads(),
                 [&](size_t i, unsigned) { ask(extents[i], keepers.empty() ? 0 : keepers[i], *slots[i]); });
}

// The questions ExtentPlanner::read_references asks about one extent.
void ReferenceAnswers::ask(uint64_t disk_bytenr, uint64_t keeper, Answer<ExtentRefs>& out)
{
    answer(out, [&] { return fs_.extent_references(disk_bytenr); });
    if (out.error || !out.value.complete)
        return;
    if (keeper != 0 && out.value.refs.size() > 2) {
        bool known;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            known = keepers_.count(keeper) > 0;
        }
        if (!known) {
            Answer<ExtentRefs> held;
            answer(held, [&] { return fs_.extent_references(keeper); });
            std::lock_guard<std::mutex> lock(mutex_);
            keepers_.emplace(keeper, std::move(held));
        }
    }
    for (const ExtentRef& r : out.value.refs) {
        bool known;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            known = inodes_.count({r.root, r.inode}) > 0;
        }
        Answer<std::optional<InodeInfo>> inode;
        if (!known)
            answer(inode, [&] { return fs_.inode_info(r.root, r.inode); });
        Answer<std::vector<FileExtentItem>> items;
        answer(items, [&] { return fs_.file_extent_items(r.root, r.inode, r.file_offset, r.file_offset); });
        std::lock_guard<std::mutex> lock(mutex_);
        if (!known)
            inodes_.emplace(InodeKey{r.root, r.inode}, std::move(inode));
        items_.emplace(ItemKey{r.root, r.inode, r.file_offset}, std::move(items));
    }
}

const ExtentRefs* ReferenceAnswers::references(uint64_t disk_bytenr) const
{
    auto it = extents_.find(disk_bytenr);
    return it == extents_.end() ? nullptr : &it->second.get();
}

const ExtentRefs* ReferenceAnswers::keeper_references(uint64_t address) const
{
    auto it = keepers_.find(address);
    return it == keepers_.end() ? nullptr : &it->second.get();
}

std::optional<InodeInfo> ReferenceAnswers::inode_info(uint64_t root, uint64_t inode) const
{
    auto it = inodes_.find({root, inode});
    return it == inodes_.end() ? fs_.inode_info(root, inode) : it->second.get();
}

std::vector<FileExtentItem> ReferenceAnswers::file_extent_items(uint64_t root, uint64_t inode, uint64_t offset) const
{
    auto it = items_.find({root, inode, offset});
    return it == items_.end() ? fs_.file_extent_items(root, inode, offset, offset) : it->second.get();
}

} // namespace snapdedupe
