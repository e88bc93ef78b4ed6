#include "plugin/diff_ahead.h"

#include "snapshots/snapshot_diff.h"

#include <memory>
#include <system_error>

namespace snapdedupe {

namespace {

std::optional<uint64_t> root_of(const Snapshot* parent)
{
    return parent ? std::optional<uint64_t>(parent->root_id) : std::nullopt;
}

} // namespace

DiffAhead::DiffAhead(const Snapshot& snapshot, const Snapshot* parent)
    : root_id_(snapshot.root_id), parent_root_(root_of(parent))
{
    std::optional<uint64_t> parent_root = parent_root_;
    try {
        auto dir = std::make_shared<const LabeledFd>(open_root_dir(snapshot));
        result_ = std::async(std::launch::async, [dir, parent_root] { return diff_snapshot(*dir, parent_root); });
    } catch (const std::system_error&) {
        // No thread to be had (a unit's TasksMax=): nothing runs ahead, and the snapshot is
        // sent in line when its turn comes (is_for is false).
    } catch (const SysError&) {
        // Not to be opened (deleted since discovery): sent for in line, where that is handled.
    }
}

DiffAhead::~DiffAhead()
{
    if (result_.valid())
        result_.wait();
}

bool DiffAhead::is_for(const Snapshot& snapshot, const Snapshot* parent) const
{
    return result_.valid() && snapshot.root_id == root_id_ && root_of(parent) == parent_root_;
}

std::optional<ChangeSet> DiffAhead::take()
{
    try {
        return result_.get();
    } catch (const std::exception&) {
        return std::nullopt; // sent again in line, where the error is handled
    }
}

} // namespace snapdedupe
