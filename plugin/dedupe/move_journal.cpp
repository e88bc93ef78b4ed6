#include "plugin/dedupe/move_journal.h"

namespace snapdedupe {

void IndexJournal::record(const std::vector<DeferredMove>& moves)
{
    for (const DeferredMove& m : moves)
        index_.add_deferred(m);
    db_.make_durable();
}

void IndexJournal::write_settled()
{
    for (const BlockLocation& where : held_)
        index_.settle_deferred(where);
    held_.clear();
}

} // namespace snapdedupe
