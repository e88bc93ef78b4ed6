#include "plugin/dedupe/move_journal.h"

namespace snapdedupe {

void IndexJournal::record(const std::vector<DeferredMove>& moves)
{
    for (const DeferredMove& m : moves) {
        index_.add_deferred(m);
        held_.erase(reference_of(m.where)); // the row is this move's now
    }
    db_.make_durable();
}

void IndexJournal::settle(const BlockLocation& where)
{
    held_.insert(reference_of(where));
}

void IndexJournal::keep(const DeferredMove& move)
{
    index_.add_deferred(move);
    held_.erase(reference_of(move.where));
}

void IndexJournal::write_settled()
{
    for (const auto& [root, inode, offset] : held_)
        index_.settle_deferred({{root, inode, 0}, offset});
    held_.clear();
}

} // namespace snapdedupe
