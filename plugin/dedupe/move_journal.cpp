#include "plugin/dedupe/move_journal.h"

namespace snapdedupe {

void IndexJournal::record(const std::vector<DeferredMove>& moves)
{
    for (const DeferredMove& m : moves) {
        index_.add_deferred(m);
        held_.erase(deferred_key(m.where)); // the row is this move's now
    }
    db_.make_durable();
}

void IndexJournal::settle(const BlockLocation& where)
{
    held_.insert_or_assign(deferred_key(where), where);
}

void IndexJournal::keep(const DeferredMove& move)
{
    index_.add_deferred(move);
    held_.erase(deferred_key(move.where));
}

void IndexJournal::write_settled()
{
    for (const auto& [key, where] : held_)
        index_.settle_deferred(where);
    held_.clear();
}

} // namespace snapdedupe
