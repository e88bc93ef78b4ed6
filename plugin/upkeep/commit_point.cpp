#include "plugin/upkeep/commit_point.h"

#include "snapshots/kernel/space_info.h"

namespace snapdedupe {

CommitPoint::CommitPoint(const LabeledFd& filesystem, IndexJournal& journal)
    : filesystem_(filesystem), journal_(journal), last_commit_(std::chrono::steady_clock::now())
{
}

void CommitPoint::at_snapshot_end()
{
    if (std::chrono::steady_clock::now() - last_commit_ >= kInterval)
        now();
}

void CommitPoint::now()
{
    if (!journal_.holds_settled())
        return;
    sync_filesystem(filesystem_);
    committed();
}

void CommitPoint::committed()
{
    journal_.write_settled();
    last_commit_ = std::chrono::steady_clock::now();
}

} // namespace snapdedupe
